"""Dynamic int8 for models past 2 GiB: MatMul weights quantized one tensor at a time from the mapped data file.

onnxruntime's ``quantize_dynamic`` does this job, but it loads the whole model as one protobuf, keeps the
float weights beside the quantized ones and serializes the result: several times the model in memory, whatever
onnxopt does around it (figures: bench/README.md, section large_model.py). So this rewrite is written here, on
onnx_ir, whose external tensors stay memory-mapped until read: each MatMul weight is read, quantized, its mapping
closed and the float tensor dropped before the next one, so the float weights are never all in memory.

The graph is the one onnxruntime's quantizer emits in IntegerOps mode (its ``operators/matmul.py``) —
``DynamicQuantizeLinear`` on the activation (one per activation, shared by its MatMuls), ``MatMulInteger``
with the int8 / uint8 weight and both zero points, ``Cast`` to float, and ``Mul`` by activation scale x weight
scale — with its names; Gemm with alpha = beta = 1 and transA = 0 first becomes MatMul (+ Add of C) on B
(transposed when transB = 1) as its ``replace_gemm_with_matmul`` does; a quantized weight that other nodes
still read reaches them through a ``DequantizeLinear`` of the int8 copy, as in its output. The weight
arithmetic is onnxruntime's own (``compute_scale_zp``, ``quantize_nparray``, ``get_qmin_qmax_for_qType`` from
``onnxruntime.quantization.quant_utils``), per output column (its axis -1) or per tensor, reduced range as the
pass resolved it, so weights, scales and zero points come out bit-identical to its, and so do the model's outputs
(tests/plugins/quantize/test_quantize_streaming.py; the 2.4 GB bench model too, bench/large_model.py). What it does not
do: the other ops ``quantize_dynamic`` covers (Conv, Gather, Attention, LSTM, EmbedLayerNormalization) stay
float, as do MatMuls whose weight is not a 2-D float32 initializer, and subgraphs; the report counts them.
``streaming=auto`` therefore only takes this path for a model past :data:`STREAMING_MIN_BYTES`, where
onnxruntime's would need several times the model in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxopt import load, save

#: ``streaming=auto`` streams a model whose .onnx and .data files together exceed this (protobuf's limit).
STREAMING_MIN_BYTES = 2 << 30
#: Ops ``quantize_dynamic`` would quantize that this path leaves float (reported when present; Gather when
#: it reads a table from an initializer, as an embedding does).
_NOT_STREAMED = frozenset({"Conv", "Gather", "Attention", "LSTM", "EmbedLayerNormalization"})
#: Weight rows quantized per numpy call: bounds the float temporaries to about this many bytes x 3.
_CHUNK_BYTES = 16 << 20


def model_bytes(source: Path) -> int:
    data = source.with_name(source.name + ".data")
    return source.stat().st_size + (data.stat().st_size if data.exists() else 0)


def wanted(setting: str, source: Path, op_types: Collection[str]) -> bool:
    """Whether ``streaming`` (auto / on / off) takes this path for the model written at ``source``."""
    if setting == "off":
        return False
    if op_types and set(op_types) != {"MatMul"}:  # the options refuse streaming=on with these
        return False
    return setting == "on" or model_bytes(source) > STREAMING_MIN_BYTES


def quantize_weight(
    weight: np.ndarray, weight_type: str, symmetric: bool, per_channel: bool, reduce_range: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quantized, scale, zero point) of a 2-D float32 weight, exactly as onnxruntime's quantizer computes them.

    Per channel means per output column (onnxruntime's axis -1 for MatMul); its per-column loop is
    vectorized here, with the same float32 arithmetic, so the bytes match.
    """
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType, quantize_nparray

    qtype = TensorProto.INT8 if weight_type == "int8" else TensorProto.UINT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range, symmetric=symmetric)
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
                 reduce_range: bool = False, excluded: Collection[str] = ()) -> None:  # fmt: skip
        super().__init__()
        self.weight_type, self.symmetric, self.per_channel = weight_type, symmetric, per_channel
        self.reduce_range = reduce_range
        self.excluded = set(excluded)
        self.stats: dict[str, Any] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        activations: dict[ir.Value, tuple[ir.Value, ir.Value, ir.Value]] = {}
        weights: dict[tuple[ir.Value, bool], tuple[ir.Value, ir.Value, ir.Value]] = {}
        quantized, skipped = Counter(), Counter()
        for node in list(graph):
            plan = self._plan(node)
            if plan is None:
                continue
            if not self._quantizable(node):
                skipped[node.op_type] += 1
                continue
            name, out, transposed = plan
            a, b = node.inputs[0], node.inputs[1]
            new_nodes = []
            if a not in activations:
                dql = ir.node("DynamicQuantizeLinear", [a], name=f"{a.name}_QuantizeLinear", num_outputs=3)
                for value, suffix in zip(dql.outputs, ("_quantized", "_scale", "_zero_point"), strict=True):
                    value.name = f"{a.name}{suffix}"
                activations[a] = tuple(dql.outputs)  # type: ignore[assignment]
                new_nodes.append(dql)
            if (b, transposed) not in weights:
                weights[b, transposed] = self._quantized_weight(graph, b, transposed)
            new_nodes += self._integer_matmul(name, out, activations[a], weights[b, transposed])
            if len(node.inputs) > 2 and node.inputs[2] is not None:  # Gemm's C
                new_nodes.append(ir.node("Add", [new_nodes[-1].outputs[0], node.inputs[2]], name=f"{node.name}_Add"))
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], new_nodes, [node.outputs[0]], [new_nodes[-1].outputs[0]]
            )
            quantized[node.op_type] += 1
        dequantized = self._drop_float_weights(graph, weights)
        self.stats = {"path": "streaming (weights quantized one at a time from the mapped data file)",
                      "quantized": dict(quantized), "weights_quantized": len(weights)}  # fmt: skip
        if dequantized:
            self.stats["weights_dequantized_for_other_readers"] = dequantized
        if skipped:
            self.stats["left_float"] = dict(skipped)
        left = Counter(n.op_type for n in ir.traversal.RecursiveGraphIterator(graph) if n.op_type in _NOT_STREAMED
                       and (n.op_type != "Gather"
                            or (n.inputs[0] is not None and n.inputs[0].is_initializer())))  # fmt: skip
        if left:
            self.stats["ops_not_streamed"] = dict(left)
        return ir.passes.PassResult(model, modified=bool(quantized))

    def _plan(self, node: ir.Node) -> tuple[str, str, bool] | None:
        """(MatMul name, its output's name, weight transposed?) as onnxruntime names them, for a node this path
        rewrites. Gemm with alpha = beta = 1 and transA = 0 is the MatMul (+ Add of C) onnxruntime's quantizer
        turns it into first, on B transposed when transB = 1. An excluded Gemm stays float (onnxruntime would
        still quantize it: its exclusions match the MatMul's new name)."""
        if node.domain not in ("", "ai.onnx") or node.name in self.excluded:
            return None
        if node.op_type == "MatMul":
            return node.name, node.outputs[0].name, False
        attrs = node.attributes
        if (node.op_type != "Gemm" or attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0
                or attrs.get_int("transA", 0) != 0):  # fmt: skip
            return None
        biased = len(node.inputs) > 2 and node.inputs[2] is not None
        return (
            f"{node.name}_MatMul",
            node.outputs[0].name + ("_MatMul" if biased else ""),
            attrs.get_int("transB", 0) == 1,
        )

    @staticmethod
    def _quantizable(node: ir.Node) -> bool:
        """onnxruntime's MatMulConstBOnly: B an initializer (here: 2-D float32, not also a graph input)."""
        if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
            return False
        b = node.inputs[1]
        tensor = b.const_value
        return (b.is_initializer() and not b.is_graph_input() and tensor is not None
                and tensor.dtype == ir.DataType.FLOAT and len(tensor.shape) == 2 and tensor.size > 0)  # fmt: skip

    def _drop_float_weights(self, graph: ir.Graph, weights: dict[tuple[ir.Value, bool], tuple[ir.Value, ...]]) -> int:
        """Remove the float weights nothing reads any more. Like onnxruntime, nodes that still read one (an Add,
        an excluded MatMul) get it dequantized from its int8 copy instead; a weight only quantized transposed
        (a Gemm's B) stays float for them. Returns how many were dequantized."""
        dequantized = 0
        for (value, transposed), (q, scale, zero) in weights.items():
            name = value.name
            read = bool(value.uses()) or value.is_graph_output()
            if name not in graph.initializers or (read and transposed):
                continue
            if read:
                attrs = {"axis": -1} if self.per_channel else {}
                dq = ir.node("DequantizeLinear", [q, scale, zero], attrs, name=f"{name}_DequantizeLinear")
                dq.outputs[0].type, dq.outputs[0].shape = value.type, value.shape
                ir.convenience.replace_all_uses_with(value, dq.outputs[0], replace_graph_outputs=True)
                graph.insert_before(next(iter(graph)), dq)
                dequantized += 1
            del graph.initializers[name]
            if read:
                dq.outputs[0].name = name
        return dequantized

    def _quantized_weight(
        self, graph: ir.Graph, weight: ir.Value, transposed: bool
    ) -> tuple[ir.Value, ir.Value, ir.Value]:
        """Quantize one weight, add its int8 tensor, scale and zero point as initializers, release the float."""
        tensor = weight.const_value
        assert tensor is not None
        array = tensor.numpy()
        q, scale, zero = quantize_weight(
            array.T if transposed else array, self.weight_type, self.symmetric, self.per_channel, self.reduce_range
        )
        del array
        if isinstance(tensor, ir.ExternalTensor):
            tensor.release()  # unmap: the float pages leave memory now, not when the model is dropped
        added = {}
        for suffix, array in (("_scale", scale), ("_zero_point", zero), ("_quantized", q)):  # onnxruntime's order
            name = f"{weight.name}{'_Transposed' if transposed else ''}{suffix}"
            value = ir.Value(name=name, shape=ir.Shape(array.shape),
                             type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                             const_value=ir.Tensor(array, name=name))  # fmt: skip
            graph.register_initializer(value)
            added[suffix] = value
        return added["_quantized"], added["_scale"], added["_zero_point"]

    @staticmethod
    def _integer_matmul(
        name: str, out: str, activation: tuple[ir.Value, ...], weight: tuple[ir.Value, ...]
    ) -> list[ir.Node]:
        """MatMulInteger -> Cast -> Mul(scales), named as onnxruntime's MatMulInteger operator names them for the
        MatMul ``name`` with output ``out``; ``activation`` / ``weight``: (quantized, scale, zero point)."""
        (a_q, a_scale, a_zero), (b_q, b_scale, b_zero) = activation, weight
        scales = ir.node(
            "Mul",
            [a_scale, b_scale],
            name=f"{name}_quant_scales_mul",
            outputs=[ir.Value(name=f"{name}_quant_scales_mul:0")],
        )
        integer = ir.node("MatMulInteger", [a_q, b_q, a_zero, b_zero], name=f"{name}_quant",
                          outputs=[ir.Value(name=f"{out}_output_quantized")])  # fmt: skip
        cast = ir.node("Cast", integer.outputs, {"to": ir.DataType.FLOAT}, name=f"{out}_output_quantized_cast",
                       outputs=[ir.Value(name=f"{out}_output_quantized_cast_output")])  # fmt: skip
        scaled = ir.node("Mul", [cast.outputs[0], scales.outputs[0]], name=f"{name}_quant_output_scale_mul",
                         outputs=[ir.Value(name=out)])  # fmt: skip
        return [scales, integer, cast, scaled]


def quantize_file(
    source: Path,
    output: Path,
    excluded: list[str],
    large: bool,
    *,
    options: Any,
    reduce_range: bool,
    stats: dict[str, Any],
) -> Path:
    """quantize-dynamic's step for this path: ``source`` read lazily, ``output`` written (as its onnxruntime
    step). ``options``: the pass's DynamicOptions (weight_type, symmetric_weights, per_channel); ``reduce_range``
    as resolved for this CPU."""
    model = load(source, check=False)
    rewrite = StreamingDynamicQuantizePass(weight_type=options.weight_type,
                                           symmetric=options.symmetric_weights is not False,
                                           per_channel=options.per_channel, reduce_range=reduce_range,
                                           excluded=excluded)  # fmt: skip
    rewrite(model)
    stats.update(rewrite.stats)
    save(model, output, external_data=large)
    return output
