"""prune: magnitude (unstructured) pruning of weights, and structured pruning that really shrinks the graph.

- ``kind=magnitude`` (:mod:`.magnitude`) zeroes the smallest ``sparsity`` of the weights of Conv /
  ConvTranspose / Gemm / MatMul, per layer or with one global threshold. It buys nothing in onnxruntime's
  dense kernels; it buys a smaller file only with ``storage=bitmask`` (:mod:`.bitmask`) or when compressed,
  and it feeds clustering (zero stays a centroid).
- ``kind=structured`` (:mod:`.structured`, :mod:`.channels`) removes ``sparsity`` of the output channels of
  Conv / ConvTranspose and output neurons of Gemm / MatMul, propagated through BatchNormalization, depthwise
  Conv, elementwise ops, Concat and Flatten into the next layer's weights; channels coupled through a residual
  Add are removed together or not at all. Fewer channels are less work: onnxruntime runs faster.

Run ``fold`` first: BatchNormalization folded into the Conv makes the weight norms rank what the layer
really outputs. Accuracy lost to structured pruning is recovered by ``distill``, whose student this makes.
The report lists every layer: channels before -> after, or why it was left whole; or each tensor's sparsity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import onnx_ir as ir

from onnxopt import PassSpec, RunContext, SearchDim, SearchHint, hookimpl, option
from onnxopt.graph import LAYER_WEIGHT_INPUT, RECURRENT_WEIGHT_INPUT, constant_weights, left_alone, why_not_a_weight

from . import bitmask
from .magnitude import prune_weights
from .structured import prune_channels


@dataclass(frozen=True)
class PruneOptions:
    kind: Literal["magnitude", "structured"] = option("magnitude", "zero single weights, or remove whole channels / neurons")
    sparsity: float = option(0.5, "fraction of the weights (magnitude) or of each layer's channels (structured) removed")
    scope: Literal["layer", "global"] = option("layer", "magnitude: the same sparsity in every layer, or one global threshold")
    criterion: Literal["l1", "l2", "activation"] = option("l1", "structured: rank channels by weight norm, or by mean |activation| over the data")
    min_elements: int = option(1024, "magnitude: tensors with fewer values are left alone")
    min_channels: int = option(4, "structured: layers with fewer output channels are left alone")
    round_to: int = option(8, "structured: round the kept channels to a multiple of this, as onnxruntime's blocked Conv kernels need (8; 16 on AVX-512); 1 = exact")
    storage: Literal["dense", "bitmask"] = option("dense", "magnitude: keep zeros in dense tensors, or store a 1-bit mask + the nonzero values (decoded at session start)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError("sparsity must be at least 0 and below 1")
        if self.min_elements < 1 or self.min_channels < 1 or self.round_to < 1:
            raise ValueError("min_elements, min_channels and round_to must be at least 1")


class PrunePass(ir.passes.InPlacePass):
    def __init__(self, options: PruneOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o, stats = self.options, self.context.stats
        if o.kind == "structured":
            layers = prune_channels(model, o, self.context)
            stats["layers"] = layers
            stats["layers_pruned"] = sum("->" in line for line in layers.values())
            return ir.passes.PassResult(model, modified=stats["layers_pruned"] > 0)
        tensors = prune_weights(model, o.sparsity, o.scope, o.min_elements)
        stats["tensors"] = tensors
        if left := _left_alone(model, tensors, o.min_elements):
            stats["weights_left_alone"] = left
        if o.storage == "bitmask":
            stats["bitmask_encoded"] = self._encode(model, tensors)
        return ir.passes.PassResult(model, modified=bool(tensors))

    def _encode(self, model: ir.Model, tensors: dict[str, float]) -> int:
        if model.opset_imports.get("", 1) < bitmask.MIN_OPSET:
            self.context.logger.warning("prune: storage=bitmask needs opset %d; the weights stay dense", bitmask.MIN_OPSET)
            return 0
        encoded = 0
        for graph in model.graphs():
            for name in [n for n in tensors if n in graph.initializers]:
                value = graph.initializers[name]
                if bitmask.saves_bytes(value.const_value.numpy()):
                    bitmask.encode(value)
                    encoded += 1
        return encoded


def _left_alone(model: ir.Model, pruned: dict[str, float], min_elements: int) -> dict[str, str]:
    """Constants read as layer or recurrent weights that magnitude pruning did not touch, and why."""
    reasons = {}
    for value, readers in constant_weights(model, {**LAYER_WEIGHT_INPUT, **RECURRENT_WEIGHT_INPUT}).items():
        if value.name not in pruned:
            op = readers[0].op_type
            reasons[value] = (f"{op}: magnitude pruning covers Conv / ConvTranspose / Gemm / MatMul weights" if op in RECURRENT_WEIGHT_INPUT
                              else why_not_a_weight(value, readers, min_elements))  # fmt: skip
    return left_alone(reasons)


def _needs_data(options: PruneOptions) -> bool:
    return options.kind == "structured" and options.criterion == "activation"


_MAGNITUDE = (("kind", ("magnitude",)),)
_STRUCTURED = (("kind", ("structured",)),)
#: What ``onnxopt auto`` tries: the useful sparsities of each kind (beyond them accuracy is gone without retraining).
SEARCH = SearchHint(
    (
        SearchDim("kind", ("magnitude", "structured")),
        SearchDim("sparsity", low=0.1, high=0.8, step=0.05, when=_MAGNITUDE, key="sparsity_magnitude"),
        SearchDim("scope", when=_MAGNITUDE),
        SearchDim("storage", when=_MAGNITUDE),
        SearchDim("min_elements", (256, 1024, 4096), when=_MAGNITUDE),
        SearchDim("sparsity", low=0.1, high=0.5, step=0.05, when=_STRUCTURED, key="sparsity_structured"),
        SearchDim("criterion", when=_STRUCTURED),
    ),
    stage=20,
)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="prune",
            summary="magnitude pruning (zeros; bitmask storage) or structured pruning that removes channels / neurons",
            create=PrunePass,
            options=PruneOptions,
            search=SEARCH,
            needs_data=_needs_data,
        )
    )
