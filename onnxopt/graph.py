"""Finding the weight tensors of a model, for passes that rewrite weights (prune, cluster).

A weight is an initializer that every one of its readers uses as the weight input of a layer op
(``input_index_by_op``, e.g. ``{"Conv": 1, "MatMul": 1}``, or a tuple of inputs: a recurrent op's W and R): a
float tensor, or an int8 / uint8 one read by a quantized op (:data:`QUANTIZED_WEIGHT_INPUT`: the weights of an
int8 graph) or as a quantized embedding table. Biases, norm parameters, graph inputs and outputs, and tensors
smaller than ``min_elements`` are never weights, so passes leave them exact. :func:`constant_weights` finds every
constant read at a weight input whatever it is, and :func:`left_alone` shapes the ``{name: reason}`` a pass
reports for those it did not rewrite.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)
#: The weight input of the ops whose weights compression passes rewrite.
LAYER_WEIGHT_INPUT: Mapping[str, int] = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
#: The input (W) and recurrent (R) weights of the recurrent ops, ``[directions, gates * hidden, size]``.
RECURRENT_WEIGHT_INPUT: Mapping[str, tuple[int, ...]] = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
#: The integer weight input of quantized graphs: QDQ (DequantizeLinear of a constant), onnxruntime's
#: QOperator ops (static QLinear*, dynamic *Integer), and int8 weights stored for float compute (a Cast from
#: int8 to float, then a scale: quantize's recurrent weights).
QUANTIZED_WEIGHT_INPUT: Mapping[str, int | tuple[int, ...]] = {
    "DequantizeLinear": 0, "ConvInteger": 1, "MatMulInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3,
    "DynamicQuantizeLSTM": (1, 2), "Cast": 0,
}  # fmt: skip
INTEGER_WEIGHT_TYPES = (ir.DataType.INT8, ir.DataType.UINT8)


def _reads_as_weight(node: ir.Node, index: int, dtype: ir.DataType,
                     input_index_by_op: Mapping[str, int | tuple[int, ...]]) -> bool:  # fmt: skip
    """Whether ``node`` reads a tensor of ``dtype`` at ``index`` as a weight: a float one as the weight input of a
    layer op, an integer one as the weight input of a quantized op, or as a quantized embedding table (a Gather
    whose rows go only to DequantizeLinear)."""
    op = node.op_type
    if index not in _indices(input_index_by_op.get(op)):
        return False
    if dtype not in INTEGER_WEIGHT_TYPES:
        return dtype in FLOAT_TYPES and op not in QUANTIZED_WEIGHT_INPUT
    if op == "Gather":
        return all(use.node.op_type == "DequantizeLinear" and use.idx == 0 for use in node.outputs[0].uses())
    if op == "Cast":  # not the uint8 indices of a decoder
        return dtype == ir.DataType.INT8 and ir.DataType(node.attributes.get_int("to", 0)) in FLOAT_TYPES
    return op in QUANTIZED_WEIGHT_INPUT


def _indices(entry: int | tuple[int, ...] | None) -> tuple[int, ...]:
    return () if entry is None else entry if isinstance(entry, tuple) else (entry,)


def weight_initializers(
    model: ir.Model, min_elements: int, input_index_by_op: Mapping[str, int | tuple[int, ...]] = LAYER_WEIGHT_INPUT
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


def tensor_of(value: ir.Value) -> ir.TensorProtocol | None:
    """The constant ``value`` holds: an initializer's tensor or a Constant node's ``value`` (else None)."""
    producer = value.producer()
    if (
        value.const_value is None
        and producer is not None
        and producer.op_type == "Constant"
        and "value" in producer.attributes
    ):
        return producer.attributes["value"].as_tensor()
    return value.const_value


def constant_weights(
    model: ir.Model, input_index_by_op: Mapping[str, int | tuple[int, ...]]
) -> dict[ir.Value, list[ir.Node]]:
    """Every constant a node reads at a weight input of ``input_index_by_op`` — an initializer or a Constant node's
    output, float or int8 / uint8, in the model and its subgraphs — with those nodes: what a pass that reports
    the weights it left alone starts from."""
    found: dict[ir.Value, list[ir.Node]] = {}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for index in _indices(input_index_by_op.get(node.op_type)):
            value = node.inputs[index] if index < len(node.inputs) else None
            tensor = None if value is None else tensor_of(value)
            if tensor is None or tensor.dtype not in FLOAT_TYPES + INTEGER_WEIGHT_TYPES:
                continue
            if node.op_type == "Cast" and not _reads_as_weight(node, index, tensor.dtype, input_index_by_op):
                continue  # a Cast of anything but an int8 weight is no weight read
            found.setdefault(value, []).append(node)
    return found


def left_alone(reasons: Mapping[ir.Value, str], limit: int = 8) -> dict[str, str]:
    """``{name: reason}`` for a pass's report, the largest tensors first; past ``limit`` the rest are counted
    under ``"..."``, so a model with hundreds of small weights left alone still prints one line."""
    sizes = {value: tensor.size if (tensor := tensor_of(value)) is not None else 0 for value in reasons}
    ordered = sorted(reasons, key=lambda value: (-sizes[value], value.name or ""))
    shown = {value.name or "?": reasons[value] for value in ordered[:limit]}
    if len(ordered) > limit:
        rest = ordered[limit:]
        shown["..."] = f"{len(rest)} more ({sum(sizes[value] for value in rest):,} values)"
    return shown


def why_not_a_weight(value: ir.Value, readers: list[ir.Node], min_elements: int) -> str:
    """Why a constant that ``readers`` read at a weight input is not a weight :func:`weight_initializers` gives."""
    op, tensor = readers[0].op_type, tensor_of(value)
    if value.const_value is None:
        return f"{op}: held in a {value.producer().op_type} node, not an initializer (run fold first)"
    if tensor.size < min_elements:
        return f"{op}: {tensor.size} values < min_elements"
    if value.is_graph_output() or value.graph is not None and value in value.graph.inputs:
        return f"{op}: also a graph input or output"
    other = next((use for use in value.uses() if use.node not in readers), None)
    if other is not None:
        return f"{op}: also read by a {other.node.op_type} (input {other.idx}) as data"
    return f"{op}: a {tensor.dtype.name} tensor {op} does not read as its weight"
