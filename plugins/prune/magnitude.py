"""Unstructured (magnitude) pruning: zero the smallest weights, per layer or against one global threshold.

Zeros alone make nothing faster in onnxruntime (its CPU kernels are dense) and the file no smaller; they pay
off when the file is compressed, with ``storage=bitmask`` (:mod:`.bitmask`), or as the input of clustering,
which keeps zero as a centroid. Written here with numpy: a partial sort per tensor is all it takes.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import weight_initializers


def _zero_smallest(array: np.ndarray, count: int) -> np.ndarray:
    """``array`` with its ``count`` smallest-magnitude values set to zero (exactly ``count``, ties broken by position)."""
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
