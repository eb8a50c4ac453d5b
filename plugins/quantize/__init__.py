"""quantize: int8 QDQ (static, with calibration data), dynamic int8, and 4/8-bit block-wise weight-only.

onnxruntime.quantization does the quantizing; :mod:`.ort_quantizer` carries the model across the boundary and
handles what a plain call gets wrong (opset < 13 with per-channel, failing pre-processing, calibration data
from the pipeline). This module chooses what to quantize: nodes excluded by name, op type or regex, and —
by default — Concat nodes that build a model output kept in float, because one shared scale over a detector's
boxes and class scores zeroed every class score while the whole-output cosine still read 0.9999.

Calibration memory: onnxruntime keeps every intermediate output of every calibration batch before computing
ranges; ``calibration_samples`` caps the samples read (default 128), which bounds it. (onnxruntime's own
``CalibMaxIntermediateOutputs`` would stream, but in 1.32 it silently drops the ranges of every full group.)

``fold`` runs first by default (through the pass registry): with BatchNorm still unfused onnxruntime's quantizer
left PP-OCRv4 at 1.05x the fp32 size and 1.18x its latency; folded first, 0.31x and 0.57x. Random (``synthetic:N``)
calibration data is allowed but reported loudly: it capped a text detector's probabilities at 0.0025.
:mod:`.prepare` turns constant divisions into multiplications and keeps written-out layer norms float (int8
PP-OCRv4 rec 0.70x -> 0.54x fp32 latency), and compacts the result. Biases stay float by default
(``int32_bias=false``): onnxruntime (>= 1.20, its BiasQuantization transformer) quantizes them when it loads
the model and fuses the same QLinearConv kernels, and the file loses one scale tensor and one DequantizeLinear
per bias (33 kB of PP-OCRv4 det: 0.277x -> 0.270x); other runtimes may want ``int32_bias=true``.

Weight-only mode rewrites Gemm as MatMul (+ Add) first, with onnxruntime's own rewrite (its MatMulNBits has no
Gemm). Weight-only blocks are asymmetric by default: on MiniLM 4-bit, symmetric blocks gave a sentence-embedding
cosine of 0.966, asymmetric 0.974 (0.158x -> 0.162x the size); ``eight_bit_regex`` keeps chosen MatMuls at 8
bits. Per-channel weights apply to Conv and, unless ``per_channel_matmul=false``, to MatMul / Gemm.

LSTM / GRU / RNN weights, which onnxruntime's static quantizer does not reach, are stored as int8 for float
compute (or, ``recurrent=dynamic_lstm``, LSTMs run as onnxruntime's DynamicQuantizeLSTM), and every mode reports
the weights it left float and why (``weights_left_float``): see :mod:`.coverage`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
import onnx_ir as ir

from onnxopt import Dataset, PassSpec, RunContext, SearchDim, SearchHint, hookimpl, load, option
from onnxopt import UsageError

from . import accuracy, coverage, ort_quantizer, prepare, streaming
from .coverage import IN_SUBGRAPH

logger = logging.getLogger("onnxopt.quantize")

#: Ops through which a Concat still "is" a model output (layout only, no arithmetic across its parts).
_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class QuantizeOptions:
    mode: Literal["static", "dynamic", "weight_only"] = option("static", "static QDQ int8 with calibration data, dynamic int8, or block-wise weight-only")
    method: Literal["minmax", "entropy", "percentile", "distribution"] = option("minmax", "calibration method (static)")
    per_channel: bool = option(True, "per-channel weight scales (static: Conv, and MatMul / Gemm unless per_channel_matmul=false; dynamic)")
    per_channel_matmul: bool = option(True, "static with per_channel: MatMul / Gemm weights per channel too, else per tensor")
    symmetric_weights: bool | None = option(None, "symmetric weights (default: yes for int8, no for weight_only blocks)")
    activation_type: Literal["uint8", "int8"] = option("uint8", "activation type (static); uint8 suits x86 CPUs")
    weight_type: Literal["int8", "uint8"] = option("int8", "weight type (static / dynamic)")
    op_types: list[str] = option([], "op types to quantize (empty: onnxruntime's defaults)")
    exclude_nodes: list[str] = option([], "node names kept in float")
    exclude_op_types: list[str] = option([], "op types kept in float")
    exclude_regex: str = option("", "node names matching this regular expression are kept in float")
    float_output_concat: bool = option(True, "keep Concat nodes that build a model output in float")
    float_layer_norm: bool = option(True, "static: keep written-out layer norms float so onnxruntime fuses them")
    calibration_samples: int = option(128, "at most this many samples are used for calibration")
    fold_first: bool = option(True, "run the fold pass first (BatchNorm left unfused is not quantized)")
    short_names: bool = option(True, "give the Q/DQ nodes and values the quantizer adds short names (the model's own stay)")
    int32_bias: bool = option(False, "static: store biases as int32 with their own scales (else float; onnxruntime quantizes them on load)")
    compact: bool = option(True, "drop all-zero weight / bias zero points and value_info after quantizing")
    preprocess: bool = option(True, "run onnxruntime's quant_pre_process first (falls back if it fails)")
    accuracy_aware: bool = option(False, "static: put the worst-quantized nodes back to float until the gates hold")
    max_trials: int = option(10, "accuracy_aware: at most this many re-quantizations")
    max_time: float = option(600.0, "accuracy_aware: stop searching after this many seconds")
    step: int = option(1, "accuracy_aware: nodes put back to float per trial")
    candidates: int = option(32, "accuracy_aware: nodes (worst SQNR first) whose effect on the output is measured")
    validation_data: str = option("", "accuracy_aware: judge trials on this .npz / folder (default: the run's data)")
    bits: Literal[4, 8] = option(4, "weight bits (weight_only)")
    block_size: int = option(32, "weights per quantization block (weight_only)")
    quantize_embeddings: bool = option(True, "also block-quantize Gather embedding tables (weight_only, 4 bits)")
    eight_bit_regex: str = option("", "weight_only: MatMul nodes whose name matches get 8-bit blocks instead")
    accuracy_level: Literal[0, 1, 2, 3, 4] = option(0, "weight_only: MatMulNBits compute type (0 onnxruntime's default, 4 int8)")
    recurrent: Literal["int8_weights", "dynamic_lstm", "float"] = option("int8_weights", "LSTM / GRU / RNN weights: int8 decoded at session start (float compute), LSTM as onnxruntime's DynamicQuantizeLSTM (static / dynamic), or float")
    streaming: Literal["auto", "on", "off"] = option("auto", "dynamic: quantize MatMul weights one at a time here (auto: models over 2 GiB, where onnxruntime's quantizer holds ~3x the model)")

    def __post_init__(self) -> None:
        if self.calibration_samples < 1:
            raise ValueError("calibration_samples must be at least 1")
        if self.max_trials < 1 or self.step < 1 or self.candidates < 1 or self.max_time <= 0:
            raise ValueError("max_trials, step and candidates must be at least 1, max_time positive")
        if self.recurrent == "dynamic_lstm" and self.mode == "weight_only":
            raise ValueError("recurrent=dynamic_lstm needs mode=static or dynamic (weight_only has no integer LSTM)")
        if self.accuracy_aware and self.mode != "static":
            raise ValueError("accuracy_aware needs mode=static (it ranks QDQ nodes)")
        if self.streaming == "on" and self.op_types and set(self.op_types) != {"MatMul"}:
            raise ValueError("streaming=on quantizes MatMul (and Gemm, as MatMul) only: drop op_types or use streaming=off")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two, at least 16")
        for name in ("exclude_regex", "eight_bit_regex"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise ValueError(f"{name}: {exc}") from None


def _output_concats(graph: onnx.GraphProto) -> list[str]:
    """Concat nodes whose output becomes a model output through layout-only ops."""
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for output in graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type in _LAYOUT_OPS:
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "Concat":
            found.append(node.name)
    return found


def _condition_cone(graph: onnx.GraphProto) -> set[str]:
    """Nodes that compute an If / Loop condition, and nodes that read the same values.

    Quantizing the condition can flip which branch runs (one row of the If fixture did). onnxruntime
    rewires every consumer of a quantized tensor to its dequantized copy, so a node sharing an input with
    the condition stays float too, else the condition would read the quantized value.
    """
    producers = {out: node for node in graph.node for out in node.output}
    pending = [node.input[0] for node in graph.node if node.op_type == "If" and node.input]
    pending += [name for node in graph.node if node.op_type == "Loop" for name in node.input[:2] if name]
    cone: set[str] = set()
    read: set[str] = set()
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in cone:
            cone.add(node.name)
            read.update(name for name in node.input if name)
            pending.extend(name for name in node.input if name)
    return cone | {node.name for node in graph.node if read.intersection(node.input)} if cone else cone


def _subgraph_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of every node inside If / Loop / Scan bodies, which are left in float."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= {n.name for n in sub.node} | _subgraph_nodes(sub)
    return names


def _excluded(graph: onnx.GraphProto, options: QuantizeOptions, stats: dict) -> dict[str, str]:
    """The nodes kept in float, each with the reason the report gives for a weight it reads."""
    names = {node.name for node in graph.node}
    unknown = sorted(set(options.exclude_nodes) - names)
    if unknown:
        raise UsageError(f"quantize: exclude_nodes names unknown node(s) {', '.join(unknown[:5])}")
    pattern = re.compile(options.exclude_regex) if options.exclude_regex else None
    excluded = dict.fromkeys(options.exclude_nodes, "exclude_nodes")
    excluded |= {n.name: "exclude_op_types" for n in graph.node if n.op_type in options.exclude_op_types}
    if pattern is not None:
        excluded |= {n.name: "exclude_regex" for n in graph.node if pattern.search(n.name)}
    if options.float_output_concat and options.mode == "static":
        concats = _output_concats(graph)
        if concats:
            stats["output_concat_kept_float"] = concats
        excluded |= dict.fromkeys(concats, "a Concat building a model output")
    if options.float_layer_norm and options.mode == "static":
        norms = prepare.layer_norm_nodes(graph)
        if norms:
            stats["layer_norm_nodes_kept_float"] = len(norms)
        excluded |= dict.fromkeys(norms, "part of a written-out layer norm")
    cone = _condition_cone(graph)
    if cone:
        stats["condition_nodes_kept_float"] = len(cone)
    subgraph = _subgraph_nodes(graph)
    if subgraph:
        stats["subgraph_nodes_kept_float"] = len(subgraph)
    excluded |= dict.fromkeys(cone, "computes an If / Loop condition") | dict.fromkeys(subgraph, IN_SUBGRAPH)
    if excluded:
        stats["kept_float"] = len(excluded)
    return dict(sorted(excluded.items()))


def _names(model: ir.Model) -> set[str]:
    """Every node and value name of a model, its subgraphs included."""
    names: set[str | None] = set()
    for graph in model.graphs():
        names |= {v.name for v in graph.inputs} | {v.name for v in graph.outputs} | set(graph.initializers)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        names |= {node.name, *(v.name for v in node.inputs if v is not None), *(v.name for v in node.outputs)}
    return {name for name in names if name}


def shorten_generated_names(model: ir.Model, original: set[str]) -> int:
    """Give the nodes and values not named in ``original`` (onnxruntime's quantizer's) short names.

    Its names repeat the tensor name with a suffix ("..._DequantizeLinear_Output") on every Q/DQ node, input
    and output: 106 kB, 7 % of a quantized PP-OCRv4 detector.
    """
    fresh = (name for name in (f"q{i}" for i in itertools.count()) if name not in original)
    renamed = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.name and node.name not in original:
            node.name = next(fresh)
            renamed += 1
        for value in node.outputs:
            if value.name and value.name not in original and not value.is_graph_output():
                value.name = next(fresh)
                renamed += 1
    for graph in model.graphs():
        for value in list(graph.initializers.values()):
            if value.name not in original and not value.is_graph_output():
                value.name = next(fresh)
                renamed += 1
    return renamed


class QuantizePass(ir.passes.FunctionalPass):
    """Quantizes a copy of the model with onnxruntime; the host validates the result against the original."""

    def __init__(self, options: QuantizeOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    def _folded(self, model: ir.Model) -> ir.Model:
        """The model after the registry's fold pass (when installed), its counters kept under ``folded_first``."""
        if not self.options.fold_first or not self.context.has_pass("fold"):
            return model
        result = self.context.run_pass("fold", model.clone())
        if result.modified:
            self.context.stats["folded_first"] = {k: v for k, v in result.stats.items() if k not in ("rules", "rounds")}
        return result.model

    def _prepared(self, model: ir.Model) -> ir.Model:
        """Folded, and for static mode with divisions by constants turned into multiplications (see prepare)."""
        folded = self._folded(model)
        if self.options.mode != "static":
            return folded
        folded = folded.clone() if folded is model else folded  # the pass never changes its input
        divisions = prepare.divisions_to_multiplications(folded)
        if divisions:
            self.context.stats["divisions_to_multiplications"] = divisions
        return folded

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o, stats = self.options, self.context.stats
        work = Path(self.context.workdir) / f"quantize-{id(self)}"
        work.mkdir(parents=True, exist_ok=True)
        source = ort_quantizer.write_for_onnxruntime(self._prepared(model), work / "float.onnx")
        large = source.with_name(source.name + ".data").exists()  # keep external data external throughout
        if o.mode == "static" and o.per_channel:
            ort_quantizer.upgrade_opset(source, ort_quantizer.PER_CHANNEL_OPSET, stats)
        if o.mode == "weight_only":  # the block quantizer declares opset 21 whatever the model had
            ort_quantizer.upgrade_opset(source, ort_quantizer.BLOCK_QUANT_OPSET, stats)
        if o.preprocess:
            source = ort_quantizer.preprocess(source, work / "preprocessed.onnx", stats)
        proto = onnx.load(str(source), load_external_data=False)
        reasons = _excluded(proto.graph, o, stats)
        if o.mode == "weight_only":  # _weight_only's Gemm -> MatMul rewrite names the MatMul after the Gemm
            reasons |= {f"{n.name}_MatMul": reasons[n.name] for n in proto.graph.node if n.op_type == "Gemm" and n.name in reasons}
        excluded = list(reasons)
        recurrent = coverage.recurrent_nodes(proto.graph)
        if o.mode == "dynamic" and o.recurrent != "dynamic_lstm":  # onnxruntime's dynamic quantizer would take LSTMs
            excluded += [name for name in recurrent if name not in reasons]
        output = work / "quantized.onnx"
        quantize = {"static": self._static, "dynamic": self._dynamic, "weight_only": self._weight_only}[o.mode]
        if o.mode == "dynamic" and streaming.wanted(o.streaming, source, o.op_types):  # see streaming's docstring
            quantize = functools.partial(streaming.quantize_file, options=o, stats=stats)
        elif o.mode == "dynamic":
            stats["path"] = "onnxruntime quantize_dynamic"
        with ort_quantizer.quiet_onnxruntime_logs():
            result = quantize(source, output, excluded, large)
            if o.mode == "static" and o.recurrent == "dynamic_lstm":  # onnxruntime's QDQ quantizer has no LSTM
                result = coverage.quantize_lstm(result, work / "lstm.onnx", excluded, o, large, stats)
        quantized = load(result, check=False)
        # onnxruntime's quantizer orders nodes ignoring values If / Loop bodies read from outside: sort again
        ir.passes.common.TopologicalSortPass()(quantized)
        if o.short_names:
            # the input's names and every name the report gives stay; the rest (the quantizer's, and names
            # given to unnamed nodes for exclusion) become short
            reported = set(excluded) | set(stats.get("kept_float_by_search", {}))
            reported |= {value.name for value in coverage.float_weights(quantized)}  # "fc2.weight_Transposed", not "q22"
            shorten_generated_names(quantized, _names(model) | reported)
        if o.compact and (dropped := prepare.compact(quantized)):
            stats["zero_points_dropped"] = dropped
        if o.recurrent != "float":
            other_ops = {node.name for node in proto.graph.node if o.op_types and node.op_type not in o.op_types}
            kept = {name for name, why in reasons.items() if why != IN_SUBGRAPH}
            coverage.store_int8(quantized, kept | other_ops, stats)
        reasons |= dict.fromkeys(stats.get("kept_float_by_search", {}), "put back to float by the accuracy search")
        if left := coverage.weights_left_float(quantized, o, reasons, stats.get("path", "")):
            stats["weights_left_float"] = left
        return ir.passes.PassResult(quantized, modified=True)

    def _static(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        o, dataset = self.options, self.context.dataset
        if dataset is None:
            raise UsageError("quantize mode=static needs calibration data: give --data calib.npz")
        if dataset.synthetic:
            message = (f"calibrating on random inputs ({dataset.name}): activation ranges will be wrong for real "
                       "data; give --data with real samples")  # fmt: skip
            self.context.stats["warning"] = message
            logger.warning("quantize: %s", message)
        input_names = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}

        def reader() -> ort_quantizer.DatasetReader:
            return ort_quantizer.DatasetReader(dataset, o.calibration_samples, self.context, input_names)

        def quantize(nodes_to_exclude: list[str], path: Path) -> None:
            self._quantize_static(source, path, reader(), nodes_to_exclude, large)

        quantize(excluded, output)
        self.context.stats["calibration_samples"] = min(o.calibration_samples, dataset.num_samples)
        if not o.accuracy_aware:
            return output
        search = accuracy.Search(self.context, source, quantize, reader, excluded, o.max_trials, o.max_time, o.step,
                                 self._validation_data(), o.candidates)  # fmt: skip
        best, report = accuracy.run(search, output)
        self.context.stats.update(report)
        return best.path

    def _validation_data(self) -> Dataset:
        """The accuracy loop's judge: ``validation_data`` opened for the original model, else the run's data."""
        if not self.options.validation_data:
            return self.context.dataset
        return self.context.open_dataset(self.options.validation_data, self.context.load_reference())

    def _quantize_static(self, source: Path, output: Path, reader, excluded: list[str], large: bool) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        o = self.options
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}  # fmt: skip
        quantize_static(
            str(source), str(output), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=o.op_types or None,
            per_channel=o.per_channel,
            activation_type=QuantType.QUInt8 if o.activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8 if o.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=large,
            calibrate_method=methods[o.method],
            # no CalibMaxIntermediateOutputs: onnxruntime 1.32's MinMax calibrator empties each full group of
            # collected outputs without merging its ranges (16k feeds: "No data is collected"); the sample cap
            # bounds memory instead
            extra_options={"WeightSymmetric": o.symmetric_weights is not False, "QuantizeBias": o.int32_bias,
                           **self._per_tensor_matmuls(source)},
        )  # fmt: skip

    def _per_tensor_matmuls(self, source: Path) -> dict:
        """onnxruntime's per_channel covers every op; per-tensor overrides take MatMul / Gemm weights back out."""
        if not self.options.per_channel or self.options.per_channel_matmul:
            return {}
        graph = onnx.load(str(source), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        names = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights}
        return {"TensorQuantOverrides": {name: [{"symmetric": self.options.symmetric_weights is not False}] for name in names}}

    def _dynamic(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        o = self.options
        quantize_dynamic(
            str(source), str(output),
            op_types_to_quantize=o.op_types or None,
            per_channel=o.per_channel,
            weight_type=QuantType.QInt8 if o.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=large,
            extra_options={"WeightSymmetric": o.symmetric_weights is not False},
        )  # fmt: skip
        return output

    def _weight_only(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        """4/8-bit blocks; MatMuls matching ``eight_bit_regex`` get 8-bit blocks in a second quantizer run (its
        MatMulNBitsQuantizer takes one bit width per call). On MiniLM, 8-bit attention projections took the
        sentence-embedding cosine from 0.974 to 0.986 for 0.162x -> 0.182x the size; 8-bit FFN layers less."""
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        from onnxruntime.quantization.onnx_model import ONNXModel

        o = self.options
        model = onnx.load(str(source))
        # MatMulNBits has no Gemm: onnxruntime's own Gemm -> MatMul (+ Add) rewrite, as its dynamic quantizer does
        ONNXModel(model).replace_gemm_with_matmul()  # an excluded Gemm's MatMul is excluded too (see call)
        pattern = re.compile(o.eight_bit_regex) if o.eight_bit_regex else None
        eight = [n.name for n in model.graph.node if pattern and n.op_type == "MatMul" and pattern.search(n.name)
                 and n.name not in excluded]  # fmt: skip
        common = {"block_size": o.block_size, "is_symmetric": o.symmetric_weights is True,
                  "accuracy_level": o.accuracy_level or None}  # fmt: skip
        # onnxruntime block-quantizes a Gather table to 4 bits only (it logs an error per table at 8)
        op_types = ("MatMul", "Gather") if o.quantize_embeddings and o.bits == 4 else ("MatMul",)
        quantizer = MatMulNBitsQuantizer(model, bits=o.bits, nodes_to_exclude=[*excluded, *eight], op_types_to_quantize=op_types,
                                         **common)  # fmt: skip
        quantizer.process()
        if eight:
            self.context.stats["eight_bit_nodes"] = len(eight)
            quantizer = MatMulNBitsQuantizer(quantizer.model.model, bits=8, nodes_to_include=eight, op_types_to_quantize=("MatMul",),
                                             **common)  # fmt: skip
            quantizer.process()
        quantizer.model.save_model_to_file(str(output), use_external_data_format=large)
        return output


_STATIC = (("mode", ("static",)),)
#: What ``onnxopt auto`` tries; calibration and the accuracy loop only matter for static QDQ.
SEARCH = SearchHint(
    (
        SearchDim("mode"),
        SearchDim("method", ("minmax", "entropy", "percentile"), when=_STATIC),
        SearchDim("accuracy_aware", when=_STATIC),
        SearchDim("per_channel", when=(("mode", ("static", "dynamic")),)),
        SearchDim("bits", when=(("mode", ("weight_only",)),)),
        SearchDim("block_size", (32, 64, 128), when=(("mode", ("weight_only",)),)),
    ),
    stage=40,
    baselines=({}, {"mode": "dynamic"}),  # what a user tries first: static with calibration, dynamic without
)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="quantize",
            summary="int8 QDQ (static, calibrated), dynamic int8, or 4/8-bit weight-only, with onnxruntime's quantizer",
            create=QuantizePass,
            options=QuantizeOptions,
            search=SEARCH,
            needs_data=lambda options: options.mode == "static",
            handles_subgraphs=False,
        )
    )
