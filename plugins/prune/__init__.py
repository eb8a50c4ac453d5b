"""prune: two passes, magnitude (unstructured) pruning of weights, and structured pruning that really shrinks the graph.

- ``prune`` (:mod:`.magnitude`) zeroes the smallest ``sparsity`` of the weights of Conv / ConvTranspose / Gemm /
  MatMul, per layer or with one global threshold. It buys nothing in onnxruntime's dense kernels; it buys a
  smaller file only with ``storage=bitmask`` (:mod:`.bitmask`) or when compressed, and it feeds clustering
  (zero stays a centroid).
- ``prune-structured`` (:mod:`.structured`, :mod:`.channels`) removes ``sparsity`` of the output channels of
  Conv / ConvTranspose and output neurons of Gemm / MatMul, propagated through BatchNormalization, depthwise
  Conv, elementwise ops, Concat and Flatten into the next layer's weights; channels coupled through a residual
  Add are removed together or not at all. Fewer channels are less work: onnxruntime runs faster. Given data,
  ``reconstruct`` (:mod:`.reconstruct`) then re-fits each layer the cut reaches, by least squares, to what the
  unpruned layer output on that data.

They were one pass with a ``kind`` switch, and all but one option applied to one kind only; as in Olive and Intel
Neural Compressor each is its own pass now, sharing the ``sparsity`` option. ``PassSpec.replaces`` keeps the old
spelling working (``prune:kind=structured``, ``prune:kind=magnitude``), with a warning.

Run ``fold`` first: BatchNormalization folded into the Conv makes the weight norms rank what the layer
really outputs. Accuracy lost to structured pruning is recovered by ``distill``, whose student this makes.
The report lists every layer: channels before -> after, or why it was left whole; or each tensor's sparsity.

This module holds the options, the search hints and the registration only, so loading the plugin (which the CLI
does before parsing) imports no numpy, onnx_ir or onnxruntime; each pass is imported when it is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from onnxopt import PassOptions, PassSpec, SearchDim, SearchHint, hookimpl, option

if TYPE_CHECKING:
    from onnxopt import RunContext

    from .magnitude import MagnitudePrunePass
    from .structured import StructuredPrunePass


@dataclass(frozen=True)
class _PruneOptions(PassOptions):
    """Options both prune passes take."""

    sparsity: float = option(0.5, "fraction of the weights (prune) or of each layer's channels (prune-structured) "
                                  "removed", ge=0, lt=1)  # fmt: skip


@dataclass(frozen=True)
class PruneOptions(_PruneOptions):
    """Magnitude pruning: single weights set to zero."""

    scope: Literal["layer", "global"] = option("layer", "the same sparsity in every layer, or one global threshold")
    min_elements: int = option(1024, "tensors with fewer values are left alone", ge=1)
    storage: Literal["dense", "bitmask"] = option(
        "dense", "keep zeros in dense tensors, or store a 1-bit mask + the nonzero values (decoded at session start)"
    )


@dataclass(frozen=True)
class StructuredOptions(_PruneOptions):
    """Structured pruning: whole output channels / neurons removed."""

    criterion: Literal["l1", "l2", "activation"] = option(
        "l1", "rank channels by weight norm, or by mean |activation| over the data"
    )
    min_channels: int = option(4, "layers with fewer output channels are left alone", ge=1)
    round_to: int = option(8, "round the kept channels to a multiple of this, as onnxruntime's blocked Conv kernels "
                              "need (8; 16 on AVX-512); 1 = exact", ge=1)  # fmt: skip
    reconstruct: bool = option(False, "re-fit each layer the cut reaches to the unpruned model's output on the data "
                                      "(least squares, no training): wins back much of what the cut lost")  # fmt: skip
    reconstruct_samples: int = option(64, "samples of the data the re-fit reads", ge=1)
    reconstruct_noise: float = option(
        0.0, "re-fit as if each layer's input carried noise of this many uint8 steps of its range (the least "
        "squares expected under the noise; 0: fit the float model), for a model static int8 follows; the level "
        "that pays differs per model (PP-OCRv4 det 20, rec 3)", ge=0,
    )  # fmt: skip


#: What ``onnxopt auto`` tries (stage 20: remove weights before lowering precision): the useful sparsities of each
#: pass (beyond them accuracy is gone without retraining). The two passes replace one pass's kinds, so a
#: candidate gets at most one of them (see onnxopt/auto/space.py).
SEARCH_MAGNITUDE = SearchHint(
    (
        SearchDim("sparsity", low=0.1, high=0.8, step=0.05),
        SearchDim("scope"),
        SearchDim("storage"),
        SearchDim("min_elements", (256, 1024, 4096)),
    ),
    stage=20,
)
SEARCH_STRUCTURED = SearchHint((SearchDim("sparsity", low=0.1, high=0.5, step=0.05), SearchDim("criterion")), stage=20)


def _magnitude(options: PruneOptions, context: RunContext) -> MagnitudePrunePass:
    from .magnitude import MagnitudePrunePass  # numpy and onnx_ir load when the pass runs, not when it registers

    return MagnitudePrunePass(options, context)


def _structured(options: StructuredOptions, context: RunContext) -> StructuredPrunePass:
    from .structured import StructuredPrunePass

    return StructuredPrunePass(options, context)


def _needs_data(options: StructuredOptions) -> bool:
    return options.criterion == "activation" or options.reconstruct


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(PassSpec(
        name="prune",
        summary="magnitude pruning: the smallest weights set to zero (bitmask storage makes the file smaller)",
        create=_magnitude, options=PruneOptions, search=SEARCH_MAGNITUDE,
        changes_latency=lambda options: options.storage != "dense",  # dense: zeros in the same tensors
        replaces=(("prune", {"kind": "magnitude"}),),  # the old default kind, spelled out
    ))  # fmt: skip
    register(PassSpec(
        name="prune-structured",
        summary="structured pruning: output channels / neurons removed, so the layers really shrink",
        create=_structured, options=StructuredOptions, search=SEARCH_STRUCTURED, needs_data=_needs_data,
        replaces=(("prune", {"kind": "structured"}),),
    ))  # fmt: skip
