"""The quantize passes: static int8 QDQ, its accuracy-aware search, dynamic int8, and 4/8-bit weight-only.

onnxruntime.quantization does the quantizing; :mod:`.ort_quantizer` carries the model across the boundary and
handles what a plain call gets wrong (opset < 13 with per-channel, failing pre-processing, calibration data
from the pipeline). The common flow (:class:`_QuantizePass`) chooses what to quantize: nodes excluded by name,
op type or regex, nodes computing an If / Loop condition, subgraphs; each pass adds its own exclusions and its
call of onnxruntime. Static keeps, by default, Concat nodes that build a model output in float, because one
shared scale over a detector's boxes and class scores zeroed every class score while the whole-output cosine
still read 0.9999.

Calibration memory: onnxruntime keeps every intermediate output of every calibration batch before computing
ranges; ``calibration_samples`` caps the samples read (default 128), which bounds it. (onnxruntime's own
``CalibMaxIntermediateOutputs`` would stream, but it silently drops the ranges of every full group.)

``fold`` runs first by default (through ``context.run_pass``): with BatchNorm still unfused onnxruntime's
quantizer leaves the model larger and slower than fp32 (bench/README.md). Random (``synthetic:N``) calibration
data is allowed but reported loudly: it capped a text detector's probabilities. :mod:`.prepare` turns constant
divisions into multiplications and keeps written-out layer norms float for static, and compacts every result.
Biases stay float by default (``int32_bias=false``): onnxruntime (>= 1.20, its BiasQuantization transformer)
quantizes them when it loads the model and fuses the same QLinearConv kernels, and the file loses one scale
tensor and one DequantizeLinear per bias; other runtimes may want ``int32_bias=true``.

Weight-only rewrites Gemm as MatMul (+ Add) first, with onnxruntime's own rewrite (its MatMulNBits has no Gemm);
its blocks are asymmetric by default (more accurate on MiniLM, bench/README.md); ``eight_bit_regex`` keeps
chosen MatMuls at 8 bits.

The int8 passes take 7-bit weights (``reduce_range``) where this CPU's uint8 x int8 kernels saturate (:mod:`.cpu`).

LSTM / GRU / RNN weights, which onnxruntime's static quantizer does not reach, are stored as int8 for float
compute (or, ``recurrent=dynamic_lstm``, LSTMs run as onnxruntime's DynamicQuantizeLSTM), and every pass reports
the weights it left float and why (``weights_left_float``): see :mod:`.coverage`.
"""

from __future__ import annotations

import abc
import itertools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import onnx
import onnx_ir as ir
import onnx_ir.passes.common  # not loaded by importing onnx_ir

from onnxopt import FunctionalPluginPass, UsageError, load

from . import accuracy, coverage, cpu, ort_quantizer, prepare, streaming
from .coverage import IN_SUBGRAPH

if TYPE_CHECKING:
    from onnxopt import Dataset

    from . import AccuracyAwareOptions, DynamicOptions, StaticOptions, WeightOnlyOptions, _Int8Options

logger = logging.getLogger("onnxopt.quantize")

#: Ops through which a Concat still "is" a model output (layout only, no arithmetic across its parts).
_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
#: ``quantize(nodes_to_exclude, output)``: one static quantization of the prepared model.
Quantize = Callable[[list[str], Path], None]


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
    and output: 7 % of a quantized PP-OCRv4 detector.
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


def _reduce_range(options: _Int8Options, stats: dict[str, Any]) -> bool:
    """An int8 pass's ``reduce_range`` resolved (auto: on where this CPU's uint8 x int8 kernels saturate, see
    :mod:`.cpu`; uint8 weights never do), and recorded in the pass's stats."""
    setting = options.reduce_range
    reduced = setting == "on" or (setting == "auto" and options.weight_type == "int8" and cpu.int8_saturates())
    stats["reduce_range"] = reduced
    return reduced


class _QuantizePass(FunctionalPluginPass):
    """Quantizes a copy of the model with onnxruntime; the host validates the result against the original.

    A subclass gives :meth:`_quantize` (its onnxruntime call) and may add exclusions (:meth:`_float_nodes`),
    an opset upgrade (:meth:`_upgrade`) and preparation (:meth:`_prepared`).
    """

    #: How the report names onnxruntime's quantizer for this pass ("onnxruntime's dynamic quantizer").
    quantizer: ClassVar[str]

    def _folded(self, model: ir.Model) -> ir.Model:
        """The model after the registry's fold pass (when installed), its counters kept under ``folded_first``."""
        if not self.options.fold_first or not self.context.has_pass("fold"):
            return model
        result = self.context.run_pass("fold", model.clone())
        if result.modified:
            self.stats["folded_first"] = {k: v for k, v in result.stats.items() if k not in ("rules", "rounds")}
        return result.model

    def _prepared(self, model: ir.Model) -> ir.Model:
        return self._folded(model)

    def _upgrade(self, source: Path) -> None:
        """Raise the opset of the model written at ``source`` where onnxruntime's quantizer needs it."""

    def _float_nodes(self, graph: onnx.GraphProto) -> dict[str, str]:
        """The nodes kept in float, each with the reason the report gives for a weight it reads."""
        o, stats = self.options, self.stats
        unknown = sorted(set(o.exclude_nodes) - {node.name for node in graph.node})
        if unknown:
            raise UsageError(f"quantize: exclude_nodes names unknown node(s) {', '.join(unknown[:5])}")
        pattern = re.compile(o.exclude_regex) if o.exclude_regex else None
        excluded = dict.fromkeys(o.exclude_nodes, "exclude_nodes")
        excluded |= {n.name: "exclude_op_types" for n in graph.node if n.op_type in o.exclude_op_types}
        if pattern is not None:
            excluded |= {n.name: "exclude_regex" for n in graph.node if pattern.search(n.name)}
        excluded |= self._pass_float_nodes(graph)
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

    def _pass_float_nodes(self, graph: onnx.GraphProto) -> dict[str, str]:
        """Nodes this pass keeps float beyond the options every pass shares."""
        return {}

    def _left_to_onnxruntime(self, graph: onnx.GraphProto, reasons: dict[str, str]) -> list[str]:
        """The node names onnxruntime's quantizer is told to exclude."""
        return list(reasons)

    @abc.abstractmethod
    def _quantize(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        """Quantize the model written at ``source`` (``excluded`` kept float); returns the file written."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o, stats = self.options, self.stats
        work = Path(self.context.workdir) / f"quantize-{id(self)}"
        work.mkdir(parents=True, exist_ok=True)
        source = ort_quantizer.write_for_onnxruntime(self._prepared(model), work / "float.onnx")
        large = source.with_name(source.name + ".data").exists()  # keep external data external throughout
        self._upgrade(source)
        if o.preprocess:
            source = ort_quantizer.preprocess(source, work / "preprocessed.onnx", stats)
        reasons, excluded, other_ops = self._plan(source)
        with ort_quantizer.quiet_onnxruntime_logs():
            result = self._quantize(source, work / "quantized.onnx", excluded, large)
        quantized = load(result, check=False)
        # onnxruntime's quantizer orders nodes ignoring values If / Loop bodies read from outside: sort again
        ir.passes.common.TopologicalSortPass()(quantized)
        if o.short_names:
            # the input's names and every name the report gives stay; the rest (the quantizer's, and names
            # given to unnamed nodes for exclusion) become short
            reported = set(excluded) | set(stats.get("kept_float_by_search", {}))
            reported |= {value.name for value in coverage.float_weights(quantized)}  # "fc2.weight_Transposed"
            shorten_generated_names(quantized, _names(model) | reported)
        if o.compact and (dropped := prepare.compact(quantized)):
            stats["zero_points_dropped"] = dropped
        if o.recurrent != "float":
            kept = {name for name, why in reasons.items() if why != IN_SUBGRAPH}
            coverage.store_int8(quantized, kept | other_ops, stats)
        reasons |= dict.fromkeys(stats.get("kept_float_by_search", {}), "put back to float by the accuracy search")
        covered = self._covered_ops(stats.get("path", ""))
        if left := coverage.weights_left_float(quantized, o, reasons, covered, self.quantizer):
            stats["weights_left_float"] = left
        return ir.passes.PassResult(quantized, modified=True)

    def _plan(self, source: Path) -> tuple[dict[str, str], list[str], set[str]]:
        """What stays float (with reasons), what onnxruntime is told to exclude, and the nodes of ops the pass
        leaves alone, read from the file written for the quantizer. The parsed file (weights inline for a model
        below the external-data threshold) is released before onnxruntime's quantizer loads its own copy."""
        graph = onnx.load(str(source), load_external_data=False).graph
        reasons = self._float_nodes(graph)
        op_types = self.options.op_types
        other_ops = {node.name for node in graph.node if op_types and node.op_type not in op_types}
        return reasons, self._left_to_onnxruntime(graph, reasons), other_ops

    @abc.abstractmethod
    def _covered_ops(self, path: str) -> frozenset[str]:
        """The ops whose weights this pass's quantizer turns into integers (``path``: the stats' ``path``)."""


class StaticQuantizePass(_QuantizePass):
    """int8 QDQ with activation ranges calibrated on the run's data (onnxruntime's ``quantize_static``)."""

    quantizer = "static"
    options: StaticOptions

    def _prepared(self, model: ir.Model) -> ir.Model:
        """Folded, with divisions by constants turned into multiplications (see prepare)."""
        folded = self._folded(model)
        folded = folded.clone() if folded is model else folded  # the pass never changes its input
        divisions = prepare.divisions_to_multiplications(folded)
        if divisions:
            self.stats["divisions_to_multiplications"] = divisions
        return folded

    def _upgrade(self, source: Path) -> None:
        if self.options.per_channel:
            ort_quantizer.upgrade_opset(source, ort_quantizer.PER_CHANNEL_OPSET, self.stats)

    def _pass_float_nodes(self, graph: onnx.GraphProto) -> dict[str, str]:
        o, stats, excluded = self.options, self.stats, {}
        if o.float_output_concat and (concats := _output_concats(graph)):
            stats["output_concat_kept_float"] = concats
            excluded |= dict.fromkeys(concats, "a Concat building a model output")
        if o.float_layer_norm and (norms := prepare.layer_norm_nodes(graph)):
            stats["layer_norm_nodes_kept_float"] = len(norms)
            excluded |= dict.fromkeys(norms, "part of a written-out layer norm")
        return excluded

    def _covered_ops(self, path: str) -> frozenset[str]:
        return coverage.STATIC_OPS

    def _quantize(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        o, dataset = self.options, self.context.dataset
        if dataset is None:
            raise UsageError("quantize mode=static needs calibration data: give --data calib.npz")
        if dataset.synthetic:
            message = (f"calibrating on random inputs ({dataset.name}): activation ranges will be wrong for real "
                       "data; give --data with real samples")  # fmt: skip
            self.stats["warning"] = message
            logger.warning("quantize: %s", message)
        input_names = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}

        def reader() -> ort_quantizer.DatasetReader:
            return ort_quantizer.DatasetReader(dataset, o.calibration_samples, self.context, input_names)

        def quantize(nodes_to_exclude: list[str], path: Path) -> None:
            self._quantize_static(source, path, reader(), nodes_to_exclude, large)

        quantize(excluded, output)
        self.stats["calibration_samples"] = min(o.calibration_samples, dataset.num_samples)
        result = self._searched(source, quantize, reader, excluded, output)
        if o.recurrent == "dynamic_lstm":  # onnxruntime's QDQ quantizer has no LSTM
            result = coverage.quantize_lstm(result, output.with_name("lstm.onnx"), excluded, o, large, self.stats)
        return result

    def _searched(self, source: Path, quantize: Quantize, reader: Callable[[], ort_quantizer.DatasetReader],
                  excluded: list[str], output: Path) -> Path:  # fmt: skip
        """The model to keep after the first quantization at ``output`` (this pass: that one)."""
        return output

    def _quantize_static(self, source: Path, output: Path, reader: ort_quantizer.DatasetReader, excluded: list[str],
                         large: bool) -> None:  # fmt: skip
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        o = self.options
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile,
                   "distribution": CalibrationMethod.Distribution}  # fmt: skip
        with ort_quantizer.histograms_of_any_shape():  # entropy / percentile / distribution: feeds of any shape
            quantize_static(
                str(source), str(output), reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=o.op_types or None,
                per_channel=o.per_channel,
                reduce_range=_reduce_range(o, self.stats),
                activation_type=QuantType.QUInt8 if o.activation_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8 if o.weight_type == "int8" else QuantType.QUInt8,
                nodes_to_exclude=excluded,
                use_external_data_format=large,
                calibrate_method=methods[o.method],
                # no CalibMaxIntermediateOutputs: onnxruntime 1.32's MinMax calibrator empties each full group of
                # collected outputs without merging its ranges (16k feeds: "No data is collected"); the sample cap
                # bounds memory instead
                extra_options={"WeightSymmetric": o.symmetric_weights, "QuantizeBias": o.int32_bias,
                               **self._per_tensor_matmuls(source)},
            )  # fmt: skip

    def _per_tensor_matmuls(self, source: Path) -> dict:
        """onnxruntime's per_channel covers every op; per-tensor overrides take MatMul / Gemm weights back out."""
        if not self.options.per_channel or self.options.per_channel_matmul:
            return {}
        graph = onnx.load(str(source), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        names = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights}
        return {"TensorQuantOverrides": {name: [{"symmetric": self.options.symmetric_weights}] for name in names}}


class AccuracyAwareQuantizePass(StaticQuantizePass):
    """Static int8, then the nodes that hurt the output most go back to float until the gates hold (see
    :mod:`.accuracy`)."""

    options: AccuracyAwareOptions

    def _searched(self, source: Path, quantize: Quantize, reader: Callable[[], ort_quantizer.DatasetReader],
                  excluded: list[str], output: Path) -> Path:  # fmt: skip
        o = self.options
        search = accuracy.Search(self.context, source, quantize, reader, excluded, o.max_trials, o.max_time, o.step,
                                 self._validation_data(), o.candidates)  # fmt: skip
        best, report = accuracy.run(search, output)
        self.stats.update(report)
        return best.path

    def _validation_data(self) -> Dataset:
        """The loop's judge: ``validation_data`` opened for the original model, else the run's data."""
        if not self.options.validation_data:
            return self.context.dataset
        return self.context.open_dataset(self.options.validation_data, self.context.load_reference())


class DynamicQuantizePass(_QuantizePass):
    """int8 weights, activations quantized at run time: onnxruntime's ``quantize_dynamic``, or for models past
    2 GiB :mod:`.streaming`."""

    quantizer = "dynamic"
    options: DynamicOptions

    def _left_to_onnxruntime(self, graph: onnx.GraphProto, reasons: dict[str, str]) -> list[str]:
        excluded = list(reasons)
        if self.options.recurrent != "dynamic_lstm":  # onnxruntime's dynamic quantizer would take LSTMs
            excluded += [name for name in coverage.recurrent_nodes(graph) if name not in reasons]
        return excluded

    def _covered_ops(self, path: str) -> frozenset[str]:
        return coverage.STREAMING_OPS if path.startswith("streaming") else coverage.DYNAMIC_OPS

    def _quantize(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        o = self.options
        if streaming.wanted(o.streaming, source, o.op_types):  # see streaming's docstring
            return streaming.quantize_file(source, output, excluded, large, options=o,
                                           reduce_range=_reduce_range(o, self.stats), stats=self.stats)  # fmt: skip
        from onnxruntime.quantization import QuantType, quantize_dynamic

        self.stats["path"] = "onnxruntime quantize_dynamic"
        quantize_dynamic(
            str(source), str(output),
            op_types_to_quantize=o.op_types or None,
            per_channel=o.per_channel,
            reduce_range=_reduce_range(o, self.stats),
            weight_type=QuantType.QInt8 if o.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=large,
            extra_options={"WeightSymmetric": o.symmetric_weights},
        )  # fmt: skip
        return output


class WeightOnlyQuantizePass(_QuantizePass):
    """4/8-bit blocks (onnxruntime's ``MatMulNBitsQuantizer``); MatMuls matching ``eight_bit_regex`` get 8-bit
    blocks in a second quantizer run (it takes one bit width per call). On MiniLM, 8-bit attention projections
    raised the sentence-embedding cosine for a slightly larger file (bench/README.md)."""

    quantizer = "weight_only"
    options: WeightOnlyOptions

    def _upgrade(self, source: Path) -> None:  # the block quantizer declares opset 21 whatever the model had
        ort_quantizer.upgrade_opset(source, ort_quantizer.BLOCK_QUANT_OPSET, self.stats)

    def _float_nodes(self, graph: onnx.GraphProto) -> dict[str, str]:
        reasons = super()._float_nodes(graph)
        # the Gemm -> MatMul rewrite in _quantize names the MatMul after the Gemm: an excluded Gemm stays excluded
        gemms = [n.name for n in graph.node if n.op_type == "Gemm" and n.name in reasons]
        return reasons | {f"{name}_MatMul": reasons[name] for name in gemms}

    def _covered_ops(self, path: str) -> frozenset[str]:
        o = self.options
        return frozenset({"MatMul", "Gemm", "Gather"} if o.quantize_embeddings and o.bits == 4 else {"MatMul", "Gemm"})

    def _quantize(self, source: Path, output: Path, excluded: list[str], large: bool) -> Path:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        from onnxruntime.quantization.onnx_model import ONNXModel

        o = self.options
        model = onnx.load(str(source))
        # MatMulNBits has no Gemm: onnxruntime's own Gemm -> MatMul (+ Add) rewrite, as its dynamic quantizer does
        ONNXModel(model).replace_gemm_with_matmul()
        pattern = re.compile(o.eight_bit_regex) if o.eight_bit_regex else None
        eight = [n.name for n in model.graph.node if pattern and n.op_type == "MatMul" and pattern.search(n.name)
                 and n.name not in excluded]  # fmt: skip
        common = {"block_size": o.block_size, "is_symmetric": o.symmetric_weights,
                  "accuracy_level": o.accuracy_level or None}  # fmt: skip
        # onnxruntime block-quantizes a Gather table to 4 bits only (it logs an error per table at 8)
        op_types = ("MatMul", "Gather") if o.quantize_embeddings and o.bits == 4 else ("MatMul",)
        quantizer = MatMulNBitsQuantizer(model, bits=o.bits, nodes_to_exclude=[*excluded, *eight],
                                         op_types_to_quantize=op_types, **common)  # fmt: skip
        quantizer.process()
        if eight:
            self.stats["eight_bit_nodes"] = len(eight)
            quantizer = MatMulNBitsQuantizer(quantizer.model.model, bits=8, nodes_to_include=eight,
                                             op_types_to_quantize=("MatMul",), **common)  # fmt: skip
            quantizer.process()
        quantizer.model.save_model_to_file(str(output), use_external_data_format=large)
        return output
