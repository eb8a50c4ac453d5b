"""Finding the weight tensors of a model, for passes that rewrite weights (prune, cluster).

A weight is an initializer that every one of its readers uses as the weight input of a layer op
(``input_index_by_op``, e.g. ``{"Conv": 1, "MatMul": 1}``): a float tensor, or an int8 / uint8 one read by a
quantized op (:data:`QUANTIZED_WEIGHT_INPUT`: the weights of an int8 graph) or as a quantized embedding table.
Biases, norm parameters, graph inputs and outputs, and tensors smaller than ``min_elements`` are never weights,
so passes leave them exact.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)
#: The weight input of the ops whose weights compression passes rewrite.
LAYER_WEIGHT_INPUT: Mapping[str, int] = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
#: The integer weight input of quantized graphs: QDQ (DequantizeLinear of a constant) and onnxruntime's
#: QOperator ops (static QLinear*, dynamic *Integer).
QUANTIZED_WEIGHT_INPUT: Mapping[str, int] = {
    "DequantizeLinear": 0, "ConvInteger": 1, "MatMulInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3,
}  # fmt: skip
INTEGER_WEIGHT_TYPES = (ir.DataType.INT8, ir.DataType.UINT8)


def _reads_as_weight(node: ir.Node, index: int, dtype: ir.DataType, input_index_by_op: Mapping[str, int]) -> bool:
    """Whether ``node`` reads a tensor of ``dtype`` at ``index`` as a weight: a float one as the weight input of a
    layer op, an integer one as the weight input of a quantized op, or as a quantized embedding table (a Gather
    whose rows go only to DequantizeLinear)."""
    op = node.op_type
    if input_index_by_op.get(op) != index:
        return False
    if dtype not in INTEGER_WEIGHT_TYPES:
        return dtype in FLOAT_TYPES and op not in QUANTIZED_WEIGHT_INPUT
    if op == "Gather":
        return all(use.node.op_type == "DequantizeLinear" and use.idx == 0 for use in node.outputs[0].uses())
    return op in QUANTIZED_WEIGHT_INPUT


def weight_initializers(
    model: ir.Model, min_elements: int, input_index_by_op: Mapping[str, int] = LAYER_WEIGHT_INPUT
) -> dict[ir.Value, list[ir.Node]]:
    """Every weight initializer in the model and its subgraphs, with the nodes that read it."""
    found: dict[ir.Value, list[ir.Node]] = {}
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or tensor.size < min_elements:
                continue
            if value.is_graph_output() or value in graph.inputs or not value.uses():
                continue
            uses = value.uses()
            if all(_reads_as_weight(use.node, use.idx, tensor.dtype, input_index_by_op) for use in uses):
                found[value] = [use.node for use in uses]
    return found


def new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as an initializer of ``graph`` under ``base`` (suffixed if the name is taken)."""
    name, suffix = base, 1
    while name in graph.initializers:
        name, suffix = f"{base}_{suffix}", suffix + 1
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    value.type, value.shape = ir.TensorType(ir.DataType.from_numpy(array.dtype)), ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def shared_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A small constant that every decoder of a graph reads, stored once under ``name``."""
    existing = graph.initializers.get(name)
    return existing if existing is not None else new_initializer(graph, name, array)
