"""The ``cluster`` pass: choose the weights, cluster each (:mod:`.kmeans`), spare the sensitive ones
(:mod:`.sensitivity`), store each as snapped values or a codebook (:mod:`.encode`), and report what it did and
what it left alone. Kept out of the package ``__init__`` so that loading the plugin imports no numpy or onnx_ir.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxopt import InPlacePluginPass
from onnxopt.graph import (
    INTEGER_WEIGHT_TYPES,
    LAYER_WEIGHT_INPUT,
    QUANTIZED_WEIGHT_INPUT,
    RECURRENT_WEIGHT_INPUT,
    constant_weights,
    left_alone,
    weight_initializers,
    why_not_a_weight,
)

from .encode import encode, storage
from .kmeans import binarize, cluster
from .sensitivity import Probe, choose

# Gather: embedding tables
CLUSTERED_INPUTS = {**LAYER_WEIGHT_INPUT, **RECURRENT_WEIGHT_INPUT, **QUANTIZED_WEIGHT_INPUT, "Gather": 0}


def _channel_axis(consumers: list[ir.Node], rank: int) -> int:
    """The weight axis holding output channels: 0 for Conv, per transB for Gemm, a DequantizeLinear's own
    ``axis``, else 1 (ConvTranspose, MatMul, and a Gather table's embedding dimension)."""
    node = consumers[0]
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    if node.op_type == "DequantizeLinear":
        return node.attributes.get_int("axis", 1) % rank
    if node.op_type == "DynamicQuantizeLSTM":  # W, R transposed to [directions, size, 4 * hidden]
        return rank - 1
    return 1 if rank >= 2 else 0


def _most_distinct_per_row(rows: np.ndarray) -> int:
    """The largest number of distinct values in any row of a 2-D array."""
    ordered = np.sort(rows, axis=1)
    return int((np.diff(ordered, axis=1) != 0).sum(axis=1).max()) + 1


@dataclass
class Clustered:
    """One weight clustered: its codebook ([width], or [channels, width] along ``axis``) and indices."""

    codebook: np.ndarray
    labels: np.ndarray
    axis: int | None
    approx: np.ndarray  # the decoded weight, in the weight's dtype


class ClusterPass(InPlacePluginPass):
    """``cluster``: k-means weight sharing as :class:`~onnxopt_plugins.cluster.ClusterOptions` say."""

    def _cluster(self, array: np.ndarray, axis: int | None, k: int, seed: int, binary: bool = False) -> Clustered:
        """Per tensor (``axis`` None) or per channel along ``axis``: all channels in one batched k-means (or
        binarized, ``binary``).

        Integer weights get integer centroids (rounded, within the type's range)."""
        o = self.options
        rows = array.reshape(1, -1) if axis is None else np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
        if binary:
            result = binarize(rows)
        else:
            result = cluster(rows, k, init=o.init, iterations=o.iterations, keep_zero=o.keep_zeros, seed=seed)
        centroids = result.centroids
        if np.issubdtype(array.dtype, np.integer):
            limits = np.iinfo(array.dtype)
            centroids = np.clip(np.rint(centroids), limits.min, limits.max)
        centroids = centroids.astype(array.dtype)
        decoded = np.take_along_axis(centroids, result.labels, axis=1)
        if axis is None:
            return Clustered(centroids[0], result.labels.reshape(array.shape), None, decoded.reshape(array.shape))
        moved = np.moveaxis(array, axis, 0).shape
        return Clustered(centroids, np.moveaxis(result.labels.reshape(moved), 0, axis), axis,
                         np.moveaxis(decoded.reshape(moved), 0, axis))  # fmt: skip

    def _axis(self, array: np.ndarray, consumers: list[ir.Node]) -> int | None:
        """The channel axis to cluster along (None: per tensor). An integer weight that holds more than ``k``
        values per tensor but at most ``k`` per channel (a clustered float weight quantized per channel) goes
        per channel: encoded exactly instead of clustered again."""
        if array.ndim < 2:
            return None
        axis = _channel_axis(consumers, array.ndim)
        if self.options.per_channel or self.options.binarize:
            return axis
        if ir.DataType.from_numpy(array.dtype) in INTEGER_WEIGHT_TYPES and np.unique(array).size > self.options.k:
            rows = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
            return axis if _most_distinct_per_row(rows) <= self.options.k else None
        return None

    def _plan(self, array: np.ndarray, consumers: list[ir.Node], seed: int) -> Clustered:
        """The weight clustered (or binarized) as the options say. A recurrent weight ``[directions, gates *
        hidden, size]`` clustered per channel has one channel per gate row of each direction (so has its int8
        copy that quantize stores for float compute, read by a Cast, whose scales are per row too)."""
        o = self.options
        k, axis = (2 if o.binarize else o.k), self._axis(array, consumers)
        if axis is not None and (consumers[0].op_type in RECURRENT_WEIGHT_INPUT or consumers[0].op_type == "Cast"):
            plan = self._cluster(array.reshape(-1, array.shape[-1]), 0, k, seed, o.binarize)
            return Clustered(plan.codebook, plan.labels.reshape(array.shape), 0, plan.approx.reshape(array.shape))
        return self._cluster(array, axis, k, seed, o.binarize)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o = self.options
        weights = weight_initializers(model, o.min_elements, CLUSTERED_INPUTS)
        skipped = {
            value: readers
            for value, readers in constant_weights(model, CLUSTERED_INPUTS).items()
            if value not in weights
        }
        originals = {value: value.const_value.numpy() for value in weights}
        seeds = {value: int(self.context.rng(index).integers(2**31)) for index, value in enumerate(weights)}
        plans: dict[ir.Value, Clustered | None] = {}
        for value, consumers in weights.items():
            plans[value] = self._plan(originals[value], consumers, seeds[value])
        if o.min_cosine > 0 and plans:
            self._spare_sensitive(model, plans, originals, seeds)
        report = {}
        opset = model.opset_imports.get("", 1)
        formats = set()
        for value, plan in plans.items():
            if plan is None:
                continue
            array = originals[value].astype(np.float64)
            index = "snap"
            if o.encoding == "codebook":
                index = storage(plan.codebook, array.size, originals[value].itemsize, opset)
            report[value.name] = {
                "k": int(plan.codebook.shape[-1]),
                "rel_l2": round(float(np.linalg.norm(plan.approx - array) / max(np.linalg.norm(array), 1e-12)), 5),
                "unique": int(np.unique(plan.codebook).size),
                "stored": index,
            }
            formats.add(index)
            if index == "snap":
                value.const_value = ir.tensor(plan.approx, name=value.name)
            else:
                encode(value, plan.codebook, plan.labels, plan.axis, index)
        self.context.stats["tensors_clustered"] = len(report)
        if report:
            self.context.stats["tensors"] = report
            self.context.stats["encoding"] = " + ".join(f if f == "snap" else f"{f} codebook" for f in sorted(formats))
        reasons = {value: why_not_a_weight(value, readers, o.min_elements) for value, readers in skipped.items()}
        reasons |= {
            value: f"spared: {self.context.stats['spared'][value.name]}"
            for value, plan in plans.items()
            if plan is None
        }
        if reasons:
            self.context.stats["weights_left_alone"] = left_alone(reasons)
        return ir.passes.PassResult(model, modified=bool(report))

    def _spare_sensitive(self, model: ir.Model, plans: dict[ir.Value, Clustered | None],
                         originals: dict[ir.Value, np.ndarray], seeds: dict[ir.Value, int]) -> None:  # fmt: skip
        """Re-plan the most sensitive main-graph weights with ``sensitive_k`` (or no clustering) until the
        outputs keep ``min_cosine`` on the run's data; record what was spared and why."""
        o, stats = self.options, self.context.stats
        main = {value.name: value for value in plans if value.graph is model.graph}
        probe = Probe(
            model, {value: originals[value] for value in main.values()}, self.context.dataset, self.context.workdir
        )
        fallback: dict[str, Clustered | None] = {}

        def spare(name: str) -> np.ndarray:
            value = main[name]
            if name not in fallback:
                fallback[name] = (
                    self._cluster(originals[value], None, o.sensitive_k, seeds[value]) if o.sensitive_k else None
                )
            return originals[value] if fallback[name] is None else fallback[name].approx

        spared, measured = choose(
            probe, {name: plans[value].approx for name, value in main.items()}, spare,
            {name: originals[value].size for name, value in main.items()}, o.min_cosine,
        )  # fmt: skip
        for name in spared:
            spare(name)
            plans[main[name]] = fallback[name]
        instead = f"k={o.sensitive_k} per tensor" if o.sensitive_k else "left float"
        stats["spared"] = {name: f"cosine loss {loss:.5f} at k={o.k}: {instead}" for name, loss in spared.items()}
        stats["probe_cosine"] = round(measured, 6)
