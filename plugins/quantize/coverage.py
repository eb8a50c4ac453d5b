"""Which weights quantize reaches: LSTM weights in a static model, and a report of every weight left float.

onnxruntime's static (QDQ) quantizer has no LSTM: an LSTM-based OCR model kept its recurrent weights in float,
about half its file, where dynamic quantization, which does have it, reached them (bench/recurrent.py).
onnxruntime runs its integer LSTM (``DynamicQuantizeLSTM``: int8 weights, activations quantized on the fly)
inside an otherwise static QDQ model, so after the static quantizer, :func:`quantize_lstm` calls onnxruntime's
dynamic quantizer on the LSTM nodes only (its ``LSTMQuant`` does the work; nothing is re-written here). At
batch 1 that integer LSTM ran slower than onnxruntime's float one: ``exclude_op_types=LSTM`` keeps it float
(smaller gain, faster), and the report says so. GRU and RNN have no integer kernel in onnxruntime in either mode
and stay float (cluster shares their weights).

:func:`weights_left_float` reads the quantized model: every constant still read in float at a weight input
(Conv, Gemm, MatMul, LSTM / GRU / RNN W and R, Gather tables) is named with the reason it stayed float, so a
report never says "quantized" over a model whose largest tensors are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from onnxopt.weights import FLOAT_TYPES, LAYER_WEIGHT_INPUT, RECURRENT_WEIGHT_INPUT, constant_weights, left_alone, tensor_of

#: The float weight inputs the report looks at: layer weights, recurrent W / R, and Gather tables (embeddings).
WEIGHT_INPUTS: Mapping[str, int | tuple[int, ...]] = {**LAYER_WEIGHT_INPUT, **RECURRENT_WEIGHT_INPUT, "Gather": 0}
#: Ops whose weights each mode's quantizer can turn into int8 (beyond these, onnxruntime has no integer kernel).
_STATIC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather", "LSTM"})  # QDQ, + LSTM by quantize_lstm
_DYNAMIC_OPS = frozenset({"Conv", "MatMul", "Gather", "LSTM"})  # onnxruntime's IntegerOps registry
_STREAMING_OPS = frozenset({"MatMul", "Gemm"})


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


def _covered(options: Any, path: str) -> frozenset[str]:
    if options.mode == "weight_only":
        return frozenset({"MatMul", "Gather"} if options.quantize_embeddings and options.bits == 4 else {"MatMul"})
    if options.mode == "dynamic":
        return _STREAMING_OPS if path.startswith("streaming") else _DYNAMIC_OPS
    return _STATIC_OPS


def weights_left_float(model: ir.Model, options: Any, reasons_by_node: Mapping[str, str], path: str) -> dict[str, str]:
    """``{weight: why it is still float}`` over the quantized ``model`` (see :func:`onnxopt.weights.left_alone`).

    ``reasons_by_node``: node names kept float on purpose (exclusions, the accuracy search) and why.
    """
    covered = _covered(options, path)
    reasons: dict[ir.Value, str] = {}
    for value, readers in constant_weights(model, WEIGHT_INPUTS).items():
        tensor = tensor_of(value)
        if tensor is None or tensor.dtype not in FLOAT_TYPES:
            continue
        node = readers[0]
        if node.name in reasons_by_node:
            reasons[value] = f"{node.op_type}: {reasons_by_node[node.name]}"
        elif node.op_type in RECURRENT_WEIGHT_INPUT and node.op_type != "LSTM":
            reasons[value] = f"{node.op_type}: onnxruntime has no integer {node.op_type} kernel"
        elif node.op_type not in covered:
            reasons[value] = f"{node.op_type}: onnxruntime's {options.mode} quantizer does not quantize {node.op_type}"
        elif options.op_types and node.op_type not in options.op_types:
            reasons[value] = f"{node.op_type}: not in op_types"
        elif value.producer() is not None:
            reasons[value] = f"{node.op_type}: held in a {value.producer().op_type} node, not an initializer"
        else:
            reasons[value] = f"{node.op_type}: onnxruntime's quantizer left it float"
    return left_alone(reasons)
