"""Unstructured (magnitude) pruning: zero the smallest weights, per layer or against one global threshold.

Zeros alone make nothing faster in onnxruntime (its CPU kernels are dense) and the file no smaller; they pay
off when the file is compressed, with ``storage=bitmask`` (:mod:`.bitmask`), or as the input of clustering,
which keeps zero as a centroid. Written here with numpy: a partial sort per tensor is all it takes.
:class:`MagnitudePrunePass` is the ``prune`` pass.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt import InPlacePluginPass
from onnxopt.graph import (
    LAYER_WEIGHT_INPUT,
    RECURRENT_WEIGHT_INPUT,
    constant_weights,
    left_alone,
    weight_initializers,
    why_not_a_weight,
)

from . import bitmask


def _zero_smallest(array: np.ndarray, count: int) -> np.ndarray:
    """``array`` with its ``count`` smallest-magnitude values set to zero (exactly ``count``, ties broken by
    position)."""
    pruned = array.copy()
    if count > 0:
        flat = pruned.reshape(-1)
        flat[np.argpartition(np.abs(flat), count - 1)[:count]] = 0
    return pruned


def prune_weights(model: ir.Model, sparsity: float, scope: str, min_elements: int) -> dict[str, float]:
    """Zero ``sparsity`` of the weights of every layer (``scope="layer"``) or of all of them together
    (``"global"``: one magnitude threshold, so layers with many small weights lose more). Returns the
    sparsity of each pruned tensor."""
    weights = list(weight_initializers(model, min_elements))
    arrays = [value.const_value.numpy() for value in weights]
    if scope == "global" and arrays:
        magnitudes = np.concatenate([np.abs(a).reshape(-1).astype(np.float32) for a in arrays])
        count = int(round(sparsity * magnitudes.size))
        threshold = np.partition(magnitudes, count - 1)[count - 1] if count else -1.0
        counts = [int(np.count_nonzero(np.abs(a) < threshold)) for a in arrays]
    else:
        counts = [int(round(sparsity * a.size)) for a in arrays]
    report = {}
    for value, array, count in zip(weights, arrays, counts):
        pruned = _zero_smallest(array, count)
        value.const_value = ir.tensor(pruned, name=value.name)
        report[value.name] = round(1.0 - float(np.count_nonzero(pruned)) / pruned.size, 4)
    return report


class MagnitudePrunePass(InPlacePluginPass):
    """``prune``: zero the smallest weights; list the weights left alone; optionally store them as a bitmask."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o, stats = self.options, self.stats
        tensors = prune_weights(model, o.sparsity, o.scope, o.min_elements)
        stats["tensors"] = tensors
        if left := _left_alone(model, tensors, o.min_elements):
            stats["weights_left_alone"] = left
        if o.storage == "bitmask":
            stats["bitmask_encoded"] = self._encode(model, tensors)
        return ir.passes.PassResult(model, modified=bool(tensors))

    def _encode(self, model: ir.Model, tensors: dict[str, float]) -> int:
        if model.opset_imports.get("", 1) < bitmask.MIN_OPSET:
            self.context.logger.warning(
                "prune: storage=bitmask needs opset %d; the weights stay dense", bitmask.MIN_OPSET
            )
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
            reasons[value] = (f"{op}: magnitude pruning covers Conv / ConvTranspose / Gemm / MatMul weights"
                              if op in RECURRENT_WEIGHT_INPUT
                              else why_not_a_weight(value, readers, min_elements))  # fmt: skip
    return left_alone(reasons)
