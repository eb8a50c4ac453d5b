"""Which weights quantize reaches: recurrent weights (LSTM / GRU / RNN), and a report of every weight left float.

onnxruntime's static (QDQ) quantizer has no LSTM, GRU or RNN: an LSTM-based OCR model kept its recurrent weights
in float, about half its file (bench/recurrent.py). Two ways to reach them (option ``recurrent``):

- ``int8_weights`` (default, every quantize pass): :func:`store_int8` stores W and R as int8 with a scale per gate row
  of each direction, decoded by ``Cast`` + ``Mul``, which onnxruntime folds at session start: the file is as small
  as with int8 weights and the recurrent op runs onnxruntime's float kernel on the decoded weights. Written here:
  no onnxruntime quantizer stores weights for float compute, and its DequantizeLinear is not folded (measured
  slower: it runs on every inference). Covers GRU and RNN too, which have no integer kernel in onnxruntime.
- ``dynamic_lstm`` (quantize, quantize-dynamic): LSTMs become onnxruntime's ``DynamicQuantizeLSTM`` (int8 weights,
  activations quantized on the fly), which onnxruntime runs inside an otherwise static QDQ model too:
  :func:`quantize_lstm` calls onnxruntime's dynamic quantizer on the LSTM nodes only (its ``LSTMQuant`` does the
  work). At batch 1 it ran slower than the float LSTM, hence not the default.

:func:`weights_left_float` reads the quantized model: every constant still read in float at a weight input
(Conv, Gemm, MatMul, LSTM / GRU / RNN W and R, Gather tables) is named with the reason it stayed float, so a
report never says "quantized" over a model whose largest tensors are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.graph import (
    FLOAT_TYPES,
    LAYER_WEIGHT_INPUT,
    RECURRENT_WEIGHT_INPUT,
    constant_weights,
    left_alone,
    new_initializer,
    tensor_of,
)  # fmt: skip

#: The float weight inputs the report looks at: layer weights, recurrent W / R, and Gather tables (embeddings).
WEIGHT_INPUTS: Mapping[str, int | tuple[int, ...]] = {**LAYER_WEIGHT_INPUT, **RECURRENT_WEIGHT_INPUT, "Gather": 0}
#: Ops whose weights each int8 quantizer can turn into int8 (beyond these, onnxruntime has no integer kernel).
STATIC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"})  # onnxruntime's QDQ registry
DYNAMIC_OPS = frozenset({"Conv", "Gemm", "MatMul", "Gather", "LSTM"})  # IntegerOps registry; Gemm becomes MatMul
STREAMING_OPS = frozenset({"MatMul", "Gemm"})
#: Why a node inside an If / Loop / Scan body is kept out of onnxruntime's quantizer (not out of :func:`store_int8`).
IN_SUBGRAPH = "inside an If / Loop / Scan body"


def quantize_lstm(source: Path, output: Path, excluded: list[str], options: Any, large: bool,
                  stats: dict[str, Any]) -> Path:  # fmt: skip
    """The static model at ``source`` with its LSTM nodes (constant W and R, not excluded, allowed by
    ``op_types``) turned into onnxruntime's DynamicQuantizeLSTM; returns the file to use."""
    from onnxruntime.quantization import quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    lstms = [n.name for n in graph.node if n.op_type == "LSTM" and n.name not in excluded and len(n.input) > 2
             and n.input[1] in constants and n.input[2] in constants]  # fmt: skip
    if not lstms or (options.op_types and "LSTM" not in options.op_types):
        return source
    quantize_dynamic(
        str(source), str(output),
        op_types_to_quantize=["LSTM"],
        per_channel=options.per_channel,
        nodes_to_exclude=excluded,
        use_external_data_format=large,
        extra_options={"WeightSymmetric": options.symmetric_weights is not False},
    )  # fmt: skip
    stats["lstm_dynamic_int8"] = len(lstms)
    return output


def recurrent_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the LSTM / GRU / RNN nodes of the main graph."""
    return [node.name for node in graph.node if node.op_type in RECURRENT_WEIGHT_INPUT]


def store_int8(model: ir.Model, skip: set[str], stats: dict[str, Any]) -> None:
    """Store the float W and R initializers of the LSTM / GRU / RNN nodes (not in ``skip``) as int8, symmetric,
    one scale per gate row of each direction, decoded by ``Cast`` + ``Mul`` in front of the node. If / Loop /
    Scan bodies included: onnxruntime's quantizer is kept out of them, but this rewrite touches weights only."""
    stored = 0
    for graph, node in [(g, n) for g in model.graphs() for n in g]:
        if node.op_type not in RECURRENT_WEIGHT_INPUT or node.name in skip:
            continue
        for index in RECURRENT_WEIGHT_INPUT[node.op_type]:
            value = node.inputs[index] if index < len(node.inputs) else None
            if (
                value is None
                or not value.is_initializer()
                or value.const_value is None
                or value.const_value.dtype not in FLOAT_TYPES
            ):
                continue
            if value.is_graph_output() or len(value.uses()) != 1:
                continue
            weight = value.const_value.numpy()
            scale = np.abs(weight).max(axis=-1, keepdims=True).astype(np.float64) / 127
            safe = np.where(scale > 0, scale, 1.0)
            quantized = np.clip(np.rint(weight / safe), -127, 127).astype(np.int8)
            name, owner = value.name, value.graph  # a body may read an initializer of an enclosing graph
            cast = ir.node("Cast", inputs=[new_initializer(owner, f"{name}_int8", quantized)],
                           attributes={"to": value.const_value.dtype})  # fmt: skip
            decoded = ir.node(
                "Mul", inputs=[cast.outputs[0], new_initializer(owner, f"{name}_scale", scale.astype(weight.dtype))]
            )
            decoded.outputs[0].name, decoded.outputs[0].type, decoded.outputs[0].shape = (
                f"{name}_decoded",
                value.type,
                value.shape,
            )
            graph.insert_before(node, [cast, decoded])
            node.replace_input_with(index, decoded.outputs[0])
            del owner.initializers[name]
            stored += 1
    if stored:
        stats["recurrent_int8_weights"] = stored


def float_weights(model: ir.Model) -> dict[ir.Value, list[ir.Node]]:
    """The float constants read at a weight input, with their readers."""
    found = constant_weights(model, WEIGHT_INPUTS)
    return {
        value: readers
        for value, readers in found.items()
        if (tensor := tensor_of(value)) is not None and tensor.dtype in FLOAT_TYPES
    }


def weights_left_float(model: ir.Model, options: Any, reasons_by_node: Mapping[str, str], covered: frozenset[str],
                       quantizer: str) -> dict[str, str]:  # fmt: skip
    """``{weight: why it is still float}`` over the quantized ``model`` (see :func:`onnxopt.graph.left_alone`).

    ``reasons_by_node``: node names kept float on purpose (exclusions, the accuracy search) and why;
    ``covered``: the ops whose weights onnxruntime's ``quantizer`` ("static", "dynamic", ...) quantizes.
    """
    reasons: dict[ir.Value, str] = {}
    for value, readers in float_weights(model).items():
        node = readers[0]
        if node.name in reasons_by_node:
            reasons[value] = f"{node.op_type}: {reasons_by_node[node.name]}"
        elif node.graph is not model.graph:  # (its name may be one the quantizer gave)
            reasons[value] = f"{node.op_type}: {IN_SUBGRAPH}"
        elif options.op_types and node.op_type not in options.op_types:
            reasons[value] = f"{node.op_type}: not in op_types"
        elif node.op_type in RECURRENT_WEIGHT_INPUT and options.recurrent == "float":
            reasons[value] = f"{node.op_type}: recurrent=float"
        elif node.op_type not in covered and node.op_type not in RECURRENT_WEIGHT_INPUT:
            reasons[value] = f"{node.op_type}: onnxruntime's {quantizer} quantizer does not quantize {node.op_type}"
        elif value.producer() is not None:
            reasons[value] = f"{node.op_type}: held in a {value.producer().op_type} node, not an initializer"
        else:
            reasons[value] = f"{node.op_type}: onnxruntime's quantizer left it float"
    return left_alone(reasons)
