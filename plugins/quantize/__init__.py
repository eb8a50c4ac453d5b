"""quantize: four passes over onnxruntime's quantizer, one per way of quantizing, each with only its own options.

- ``quantize``: int8 QDQ, activations calibrated on the run's data (static);
- ``quantize-accuracy-aware``: the same, then the nodes that hurt the output most go back to float until the
  gates hold (:mod:`.accuracy`);
- ``quantize-dynamic``: int8 weights, activations quantized at run time (no data);
- ``quantize-weight-only``: 4/8-bit blocks of MatMul / Gemm weights and embedding tables (no data).

They were one pass with a ``mode`` switch, and most of its 31 options applied to one mode only; as in Olive and
Intel Neural Compressor, each way is its own pass now, sharing one base of options (what is kept float, fold
first, pre-processing, recurrent weights, names). ``PassSpec.replaces`` keeps the old spelling working
(``quantize:mode=dynamic``, ``quantize:accuracy_aware=true``), with a warning. The accuracy-aware search is its
own pass, not a flag of ``quantize``: its five options (trials, time, step, candidates, validation data) apply
only to it, and it is a different cost (a quantization per trial) that ``onnxopt auto`` chooses on its own.

This module holds the options, the search hints and the registration only, so loading the plugin (which the CLI
does before parsing) imports no numpy, onnx, onnx_ir or onnxruntime; the passes live in :mod:`.quantizers`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from onnxopt import PassOptions, PassSpec, SearchDim, SearchHint, hookimpl, option

if TYPE_CHECKING:
    from onnxopt import RunContext


def _check_regex(name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class _CommonOptions(PassOptions):
    """Options every quantize pass takes."""

    op_types: list[str] = option([], "op types to quantize (empty: onnxruntime's defaults)")
    exclude_nodes: list[str] = option([], "node names kept in float")
    exclude_op_types: list[str] = option([], "op types kept in float")
    exclude_regex: str = option("", "node names matching this regular expression are kept in float")
    fold_first: bool = option(True, "run the fold pass first (BatchNorm left unfused is not quantized)")
    short_names: bool = option(True, "give the nodes and values the quantizer adds short names (the model's own stay)")
    compact: bool = option(True, "drop all-zero weight / bias zero points and value_info after quantizing")
    preprocess: bool = option(True, "run onnxruntime's quant_pre_process first (falls back if it fails)")
    recurrent: Literal["int8_weights", "dynamic_lstm", "float"] = option(
        "int8_weights", "LSTM / GRU / RNN weights: int8 decoded at session start (float compute), LSTM as "
        "onnxruntime's DynamicQuantizeLSTM, or float")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_regex("exclude_regex", self.exclude_regex)


@dataclass(frozen=True)
class _Int8Options(_CommonOptions):
    """Options of the int8 passes (static and dynamic)."""

    per_channel: bool = option(True, "per-channel weight scales (Conv, MatMul, Gemm)")
    weight_type: Literal["int8", "uint8"] = option("int8", "weight type")
    symmetric_weights: bool = option(True, "symmetric weight ranges (zero point 0)")
    reduce_range: Literal["auto", "on", "off"] = option(
        "auto", "7-bit int8 weights, which onnxruntime's uint8 x int8 kernels cannot overflow (auto: on where "
        "this CPU's kernels saturate, x86 without VNNI; off: full-range weights for VNNI / ARM targets)",
    )  # fmt: skip


@dataclass(frozen=True)
class StaticOptions(_Int8Options):
    """Static int8 QDQ: activation ranges calibrated on the run's data."""

    method: Literal["minmax", "entropy", "percentile", "distribution"] = option("minmax", "calibration method")
    per_channel_matmul: bool = option(True, "with per_channel: MatMul / Gemm weights per channel too, else per tensor")
    activation_type: Literal["uint8", "int8"] = option("uint8", "activation type; uint8 suits x86 CPUs")
    calibration_samples: int = option(128, "at most this many samples are used for calibration", ge=1)
    float_output_concat: bool = option(True, "keep Concat nodes that build a model output in float")
    float_layer_norm: bool = option(True, "keep written-out layer norms float so onnxruntime fuses them")
    int32_bias: bool = option(False, "store biases as int32 with their own scales (else float; onnxruntime "
                                     "quantizes them on load)")  # fmt: skip


@dataclass(frozen=True)
class QuantizeOptions(StaticOptions):
    """``quantize``'s options: static ones, and the old mode switch for one release."""

    mode: Literal["static", "dynamic", "weight_only"] = option(
        "static", "old spelling, for one release: mode=dynamic / weight_only run quantize-dynamic / "
        "quantize-weight-only")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "static":  # the registry routes these before parsing; only a direct construction gets here
            raise ValueError(f"mode={self.mode} is the pass quantize-{self.mode.replace('_', '-')}")


@dataclass(frozen=True)
class AccuracyAwareOptions(StaticOptions):
    """Static int8, then the worst-quantized nodes back to float until the gates hold."""

    max_trials: int = option(10, "at most this many re-quantizations", ge=1)
    max_time: float = option(600.0, "stop searching after this many seconds", gt=0)
    step: int = option(1, "nodes put back to float per trial", ge=1)
    candidates: int = option(32, "nodes (worst SQNR first) whose effect on the output is measured", ge=1)
    validation_data: str = option("", "judge trials on this .npz / folder (default: the run's data)")


#: quant_pre_process gives the static quantizer the shapes it needs; the dynamic and block quantizers read weights
#: only, and wrote the same models without it on MiniLM, PP-OCRv4 rec and ddddocr in half the pass time (cost.py).
_NOT_NEEDED = "run onnxruntime's quant_pre_process first (off: this quantizer reads weights only, not shapes)"


@dataclass(frozen=True)
class DynamicOptions(_Int8Options):
    """Dynamic int8: weights quantized ahead, activations at run time."""

    preprocess: bool = option(False, _NOT_NEEDED)

    streaming: Literal["auto", "on", "off"] = option(
        "auto", "quantize MatMul weights one at a time here (auto: models over 2 GiB, where onnxruntime's "
        "quantizer holds ~3x the model)")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.streaming == "on" and self.op_types and set(self.op_types) != {"MatMul"}:
            raise ValueError("streaming=on quantizes MatMul (and Gemm, as MatMul) only: drop op_types or use "
                             "streaming=off")  # fmt: skip


@dataclass(frozen=True)
class WeightOnlyOptions(_CommonOptions):
    """Block-wise 4/8-bit weights (onnxruntime's MatMulNBits), float compute."""

    preprocess: bool = option(False, _NOT_NEEDED)

    recurrent: Literal["int8_weights", "float"] = option(
        "int8_weights", "LSTM / GRU / RNN weights: int8 decoded at session start (float compute), or float"
    )
    bits: Literal[4, 8] = option(4, "weight bits")
    block_size: int = option(32, "weights per quantization block (a power of two)", ge=16)
    symmetric_weights: bool = option(False, "symmetric blocks (zero point 0); asymmetric kept more accuracy on MiniLM")
    quantize_embeddings: bool = option(True, "also block-quantize Gather embedding tables (4 bits only)")
    eight_bit_regex: str = option("", "MatMul nodes whose name matches get 8-bit blocks instead")
    accuracy_level: Literal[0, 1, 2, 3, 4] = option(0, "MatMulNBits compute type (0 onnxruntime's default, 4 int8)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two")
        _check_regex("eight_bit_regex", self.eight_bit_regex)


#: What ``onnxopt auto`` tries (stage 40: after removing weights, before sharing values). The four passes
#: replace one old pass, so a candidate gets at most one of them (see onnxopt/auto/space.py).
SEARCH_STATIC = SearchHint(
    (SearchDim("method", ("minmax", "entropy", "percentile")), SearchDim("per_channel")),
    stage=40,
    baselines=({},),  # what a user tries first: static with calibration (and dynamic, below)
)
SEARCH_ACCURACY_AWARE = SearchHint((SearchDim("method", ("minmax", "entropy", "percentile")), SearchDim("per_channel")),
                                   stage=40)  # fmt: skip
SEARCH_DYNAMIC = SearchHint((SearchDim("per_channel"),), stage=40, baselines=({},))
SEARCH_WEIGHT_ONLY = SearchHint((SearchDim("bits"), SearchDim("block_size", (32, 64, 128))), stage=40)


def _static(options: StaticOptions, context: RunContext) -> Any:
    from .quantizers import StaticQuantizePass

    return StaticQuantizePass(options, context)


def _accuracy_aware(options: AccuracyAwareOptions, context: RunContext) -> Any:
    from .quantizers import AccuracyAwareQuantizePass

    return AccuracyAwareQuantizePass(options, context)


def _dynamic(options: DynamicOptions, context: RunContext) -> Any:
    from .quantizers import DynamicQuantizePass

    return DynamicQuantizePass(options, context)


def _weight_only(options: WeightOnlyOptions, context: RunContext) -> Any:
    from .quantizers import WeightOnlyQuantizePass

    return WeightOnlyQuantizePass(options, context)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    common = {"handles_subgraphs": False}
    register(PassSpec(
        name="quantize-accuracy-aware",
        summary="static int8 QDQ, then the nodes that hurt the output most back to float until the gates hold",
        create=_accuracy_aware, options=AccuracyAwareOptions, search=SEARCH_ACCURACY_AWARE, needs_data=True,
        # the longer selector first: its mode=static must not be left over for this pass's options
        replaces=(("quantize", {"mode": "static", "accuracy_aware": True}), ("quantize", {"accuracy_aware": True})),
        **common,
    ))  # fmt: skip
    register(PassSpec(
        name="quantize",
        summary="int8 QDQ with activations calibrated on the data (static), with onnxruntime's quantizer",
        create=_static, options=QuantizeOptions, search=SEARCH_STATIC, needs_data=True,
        replaces=(("quantize", {"accuracy_aware": False}),),  # auto's recipes spelled the default out
        **common,
    ))  # fmt: skip
    register(PassSpec(
        name="quantize-dynamic",
        summary="dynamic int8: int8 weights, activations quantized at run time, with onnxruntime's quantizer",
        create=_dynamic, options=DynamicOptions, search=SEARCH_DYNAMIC, replaces=(("quantize", {"mode": "dynamic"}),),
        **common,
    ))  # fmt: skip
    register(PassSpec(
        name="quantize-weight-only",
        summary="4/8-bit block-wise weights (MatMul / Gemm, embedding tables), with onnxruntime's MatMulNBits",
        create=_weight_only, options=WeightOnlyOptions, search=SEARCH_WEIGHT_ONLY,
        replaces=(("quantize", {"mode": "weight_only"}),),
        **common,
    ))  # fmt: skip
