"""Dynamic int8 for models past 2 GiB: MatMul weights quantized one tensor at a time from the mapped data file.

onnxruntime's ``quantize_dynamic`` does this job, but it loads the whole model as one protobuf, keeps the
float weights beside the quantized ones and serializes the result: 3.1x the model in memory on a 2.4 GB
model (bench/large_model.py), whatever onnxopt does around it. So this rewrite is written here, on onnx_ir,
whose external tensors stay memory-mapped until read: each MatMul weight is read, quantized, its mapping
closed and the float tensor dropped before the next one, so the float weights are never all in memory.

The graph is the one onnxruntime's quantizer emits in IntegerOps mode (its ``operators/matmul.py``) —
``DynamicQuantizeLinear`` on the activation (one per activation, shared by its MatMuls), ``MatMulInteger``
with the int8 / uint8 weight and both zero points, ``Cast`` to float, and ``Mul`` by activation scale x weight
scale — with its names. The weight arithmetic is onnxruntime's own (``compute_scale_zp``,
``quantize_nparray``, ``get_qmin_qmax_for_qType`` from ``onnxruntime.quantization.quant_utils``), per output
column (its axis -1) or per tensor, no reduced range, so the weights come out bit-identical to its
(tests/test_quantize_streaming.py). What it does not do: the other ops ``quantize_dynamic`` covers (Conv,
Gather, Attention, LSTM, EmbedLayerNormalization) stay float, as do MatMuls whose weight is not a 2-D float32
initializer, and subgraphs; the counts are in the report. ``streaming=auto`` therefore only takes this path
for a model past :data:`STREAMING_MIN_BYTES`, where onnxruntime's would need 3x the model in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxopt import load, save
from onnxopt.errors import UsageError

#: ``streaming=auto`` streams a model whose .onnx and .data files together exceed this (protobuf's limit).
STREAMING_MIN_BYTES = 2 << 30
#: Ops ``quantize_dynamic`` would quantize that this path leaves float (reported when present).
_NOT_STREAMED = frozenset({"Conv", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"})
#: Weight rows quantized per numpy call: bounds the float temporaries to about this many bytes x 3.
_CHUNK_BYTES = 16 << 20

_QTYPES = {"int8": ir.DataType.INT8, "uint8": ir.DataType.UINT8}


def model_bytes(source: Path) -> int:
    data = source.with_name(source.name + ".data")
    return source.stat().st_size + (data.stat().st_size if data.exists() else 0)


def wanted(setting: str, source: Path, op_types: Collection[str]) -> bool:
    """Whether ``streaming`` (auto / on / off) takes this path for the model written at ``source``."""
    if setting == "off":
        return False
    if op_types and set(op_types) != {"MatMul"}:
        if setting == "on":
            raise UsageError("quantize: streaming=on quantizes MatMul only; drop op_types or use streaming=off")
        return False
    return setting == "on" or model_bytes(source) > STREAMING_MIN_BYTES


def quantize_weight(weight: np.ndarray, weight_type: str, symmetric: bool, per_channel: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quantized, scale, zero point) of a 2-D float32 weight, exactly as onnxruntime's quantizer computes them.

    Per channel means per output column (onnxruntime's axis -1 for MatMul); its per-column loop is
    vectorized here, with the same float32 arithmetic, so the bytes match.
    """
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType, quantize_nparray

    qtype = TensorProto.INT8 if weight_type == "int8" else TensorProto.UINT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=False, symmetric=symmetric)
    if per_channel:
        lows, highs = weight.min(axis=0), weight.max(axis=0)
    else:
        lows, highs = np.array([weight.min()]), np.array([weight.max()])
    params = [compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), qmin, qmax, symmetric)
              for lo, hi in zip(lows, highs, strict=True)]  # fmt: skip
    zero_point = np.array([p[0] for p in params], dtype=qmin.dtype)
    scale = np.array([p[1] for p in params], dtype=np.float32)
    if not per_channel:
        zero_point, scale = zero_point.reshape(()), scale.reshape(())
    quantized = np.empty(weight.shape, dtype=qmin.dtype)
    rows = max(1, _CHUNK_BYTES // max(1, weight.shape[1] * 4))
    for start in range(0, weight.shape[0], rows):
        quantized[start : start + rows] = quantize_nparray(qtype, weight[start : start + rows], scale, zero_point)
    return quantized, scale, zero_point


class StreamingDynamicQuantizePass(ir.passes.InPlacePass):
    """Rewrites MatMuls with a constant 2-D float32 weight into onnxruntime's dynamic int8 pattern, in place."""

    def __init__(self, *, weight_type: str = "int8", symmetric: bool = True, per_channel: bool = True,
                 excluded: Collection[str] = ()) -> None:  # fmt: skip
        super().__init__()
        self.weight_type, self.symmetric, self.per_channel = weight_type, symmetric, per_channel
        self.excluded = set(excluded)
        self.stats: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        activations: dict[ir.Value, tuple[ir.Value, ir.Value, ir.Value]] = {}
        weights: dict[ir.Value, tuple[ir.Value, ir.Value, ir.Value]] = {}
        quantized = skipped = 0
        for node in list(graph):
            if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.name in self.excluded:
                continue
            if not self._quantizable(node):
                skipped += 1
                continue
            a, b = node.inputs
            new_nodes = []
            if a not in activations:
                dql = ir.node("DynamicQuantizeLinear", [a], name=f"{a.name}_QuantizeLinear", num_outputs=3)
                for value, suffix in zip(dql.outputs, ("_quantized", "_scale", "_zero_point"), strict=True):
                    value.name = f"{a.name}{suffix}"
                activations[a] = tuple(dql.outputs)  # type: ignore[assignment]
                new_nodes.append(dql)
            if b not in weights:
                weights[b] = self._quantized_weight(graph, b)
            a_q, a_scale, a_zero = activations[a]
            b_q, b_scale, b_zero = weights[b]
            new_nodes += self._integer_matmul(node, a_q, a_scale, a_zero, b_q, b_scale, b_zero)
            ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [node.outputs[0]], [new_nodes[-1].outputs[0]])
            quantized += 1
        for value in weights:  # a float weight other nodes still read stays
            if not value.uses() and not value.is_graph_output():
                del graph.initializers[value.name]
        self.stats = {"path": "streaming (weights quantized one at a time from the mapped data file)",
                      "matmuls_quantized": quantized, "weights_quantized": len(weights)}  # fmt: skip
        if skipped:
            self.stats["matmuls_left_float"] = skipped
        left = Counter(n.op_type for n in ir.traversal.RecursiveGraphIterator(graph) if n.op_type in _NOT_STREAMED)
        if left:
            self.stats["ops_left_float"] = dict(left)
        return ir.passes.PassResult(model, modified=quantized > 0)

    @staticmethod
    def _quantizable(node: ir.Node) -> bool:
        """onnxruntime's MatMulConstBOnly: B an initializer (here: 2-D float32, not also a graph input)."""
        if len(node.inputs) != 2 or node.inputs[0] is None or node.inputs[1] is None:
            return False
        b = node.inputs[1]
        tensor = b.const_value
        return (b.is_initializer() and not b.is_graph_input() and tensor is not None
                and tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) == 2)  # fmt: skip

    def _quantized_weight(self, graph: ir.Graph, weight: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """Quantize one weight, add its int8 tensor, scale and zero point as initializers, release the float."""
        tensor = weight.const_value
        assert tensor is not None
        q, scale, zero = quantize_weight(tensor.numpy(), self.weight_type, self.symmetric, self.per_channel)
        if isinstance(tensor, ir.ExternalTensor):
            tensor.release()  # unmap: the float pages leave memory now, not when the model is dropped
        added = {}
        for suffix, array in (("_scale", scale), ("_zero_point", zero), ("_quantized", q)):  # onnxruntime's order
            name = f"{weight.name}{suffix}"
            value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                             const_value=ir.Tensor(array, name=name))  # fmt: skip
            graph.register_initializer(value)
            added[suffix] = value
        return added["_quantized"], added["_scale"], added["_zero_point"]

    @staticmethod
    def _integer_matmul(node: ir.Node, a_q: ir.Value, a_scale: ir.Value, a_zero: ir.Value, b_q: ir.Value,
                        b_scale: ir.Value, b_zero: ir.Value) -> list[ir.Node]:  # fmt: skip
        """MatMulInteger -> Cast -> Mul(scales), named as onnxruntime's MatMulInteger operator names them."""
        name, out = f"{node.name}_quant", node.outputs[0].name
        scales = ir.node("Mul", [a_scale, b_scale], name=f"{name}_scales_mul", outputs=[ir.Value(name=f"{name}_scales_mul:0")])
        integer = ir.node("MatMulInteger", [a_q, b_q, a_zero, b_zero], name=name,
                          outputs=[ir.Value(name=f"{out}_output_quantized")])  # fmt: skip
        cast = ir.node("Cast", integer.outputs, {"to": ir.DataType.FLOAT}, name=f"{out}_output_quantized_cast",
                       outputs=[ir.Value(name=f"{out}_output_quantized_cast_output")])  # fmt: skip
        scaled = ir.node("Mul", [cast.outputs[0], scales.outputs[0]], name=f"{name}_output_scale_mul")
        return [scales, integer, cast, scaled]


def quantize_file(source: Path, output: Path, excluded: list[str], large: bool, *, options: Any, stats: dict[str, Any]) -> Path:
    """The quantize pass's dynamic step for this path: ``source`` read lazily, ``output`` written (same signature
    as its onnxruntime steps). ``options`` is the pass's QuantizeOptions (weight_type, symmetric_weights,
    per_channel)."""
    model = load(source, check=False)
    rewrite = StreamingDynamicQuantizePass(weight_type=options.weight_type, symmetric=options.symmetric_weights is not False,
                                           per_channel=options.per_channel, excluded=excluded)  # fmt: skip
    rewrite(model)
    stats.update(rewrite.stats)
    save(model, output, external_data=large)
    return output
