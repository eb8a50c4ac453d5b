"""cluster: k-means weight sharing (as TF-MOT offers for Keras) for any ONNX model, with a compact encoding.

Each chosen weight — the constant weight input of Conv, ConvTranspose, Gemm and MatMul, the input and recurrent
weights (W, R) of LSTM / GRU / RNN, or the table of a Gather (embeddings), with at least ``min_elements`` values;
biases and norm parameters are never chosen — is clustered into ``k`` centroids per tensor or per output channel,
a recurrent weight's channels being the gate rows of each direction (:mod:`.kmeans`). ``binarize`` is the
two-level case: a sign per weight and a scale per channel (XNOR-Net's binary weights), stored as 1-bit indices.
Two encodings:

- ``snap``: the values are replaced by their centroids, dtype unchanged. The file is as large as before but
  compresses well, and int8 quantization can follow (clustered, then quantized).
- ``codebook`` (:mod:`.encode`): 1-bit (two values), 4-bit (``k <= 16``) or uint8 indices plus a codebook,
  decoded in the graph (``Cast`` + ``Gather`` / ``GatherElements``), which onnxruntime folds at session start:
  inference runs the same weights, the weights take up to ~32x (1-bit), ~8x (4-bit) or ~4x (uint8) fewer bytes;
  session start pays for the decoding. Each weight takes the smallest storage counting the decoder's own bytes
  (:func:`.encode.storage`): a weight too short to gain stays snapped, and the report says which (``stored``).
  Run ``fold`` before ``cluster``, not after: folding would decode the weights back into the file; ``quantize``
  decodes them too (its ``fold_first``), so for int8 compute run ``cluster`` again after it (below).

With ``min_cosine`` and data, the choice is fidelity-driven (:mod:`.sensitivity`): the tensors whose
clustering costs the outputs the most cosine per weight are clustered with ``sensitive_k`` centroids per
tensor instead (``0``: left float), until the outputs keep ``min_cosine`` against the model before clustering.

After ``quantize``, ``cluster`` clusters the int8 / uint8 weights of the quantized graph (QDQ or onnxruntime's
integer ops, and quantized embedding tables) the same way: centroids are rounded to integers and the codebook
keeps the weight's type, so the decoder yields the same int8 tensor the quantized op reads and onnxruntime
still fuses it into QLinearConv / QGemm / DynamicQuantizeMatMul — 4-bit storage with int8 compute. A weight that already holds at most ``k`` values
(clustered before quantizing: ``cluster:encoding=snap`` then ``quantize``, whose per-channel scales turn each
tensor's centroids into at most ``k`` integers per channel) is encoded exactly, per channel if need be.

Zeros (pruned weights) stay exactly zero, as a centroid of their own (not when binarized). The report lists, per
tensor, the number of centroids, the relative L2 reconstruction error and the unique values, which tensors were
spared and what clustering them would have cost, and (``weights_left_alone``) every other constant read as a
weight that was not clustered, and why: too small, held in a Constant node, also read as data, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxopt import PassSpec, RunContext, SearchDim, SearchHint, hookimpl, option
from onnxopt.graph import (
    INTEGER_WEIGHT_TYPES, LAYER_WEIGHT_INPUT, QUANTIZED_WEIGHT_INPUT, RECURRENT_WEIGHT_INPUT, constant_weights, left_alone,
    weight_initializers, why_not_a_weight,
)  # fmt: skip

from .encode import encode, storage
from .kmeans import binarize, cluster
from .sensitivity import Probe, choose

# Gather: embedding tables
CLUSTERED_INPUTS = {**LAYER_WEIGHT_INPUT, **RECURRENT_WEIGHT_INPUT, **QUANTIZED_WEIGHT_INPUT, "Gather": 0}


@dataclass(frozen=True)
class ClusterOptions:
    k: int = option(16, "centroids per tensor (or per channel); at most 256")
    per_channel: bool = option(False, "cluster each output channel separately")
    init: Literal["kmeans++", "linear", "density"] = option("kmeans++", "centroid initialisation (TF-MOT's names)")
    encoding: Literal["codebook", "snap"] = option("codebook", "indices + codebook decoded in-graph, or values snapped to centroids")
    min_elements: int = option(1024, "tensors with fewer values are left alone")
    iterations: int = option(50, "at most this many k-means iterations")
    keep_zeros: bool = option(True, "exact zeros (pruned weights) stay zero, as a centroid of their own")
    min_cosine: float = option(0.0, "with data: spare the most sensitive tensors until every output keeps this cosine (0: off)")
    sensitive_k: int = option(256, "centroids per tensor for the spared tensors (0: leave them float)")
    binarize: bool = option(False, "k=2 per channel: sign(w) x the channel's mean |w|, stored as 1-bit indices (k, per_channel, init, keep_zeros ignored)")

    def __post_init__(self) -> None:
        if not 2 <= self.k <= 256:
            raise ValueError("k must be between 2 and 256")
        if self.sensitive_k != 0 and not 2 <= self.sensitive_k <= 256:
            raise ValueError("sensitive_k must be 0 or between 2 and 256")
        if self.min_elements < 1 or self.iterations < 1:
            raise ValueError("min_elements and iterations must be at least 1")
        if not 0.0 <= self.min_cosine <= 1.0:
            raise ValueError("min_cosine must be between 0 and 1")


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


class ClusterPass(ir.passes.InPlacePass):
    def __init__(self, options: ClusterOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

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
        skipped = {value: readers for value, readers in constant_weights(model, CLUSTERED_INPUTS).items() if value not in weights}
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
        reasons |= {value: f"spared: {self.context.stats['spared'][value.name]}" for value, plan in plans.items() if plan is None}
        if reasons:
            self.context.stats["weights_left_alone"] = left_alone(reasons)
        return ir.passes.PassResult(model, modified=bool(report))

    def _spare_sensitive(self, model: ir.Model, plans: dict[ir.Value, Clustered | None],
                         originals: dict[ir.Value, np.ndarray], seeds: dict[ir.Value, int]) -> None:  # fmt: skip
        """Re-plan the most sensitive main-graph weights with ``sensitive_k`` (or no clustering) until the
        outputs keep ``min_cosine`` on the run's data; record what was spared and why."""
        o, stats = self.options, self.context.stats
        main = {value.name: value for value in plans if value.graph is model.graph}
        probe = Probe(model, {value: originals[value] for value in main.values()}, self.context.dataset, self.context.workdir)
        fallback: dict[str, Clustered | None] = {}

        def spare(name: str) -> np.ndarray:
            value = main[name]
            if name not in fallback:
                fallback[name] = self._cluster(originals[value], None, o.sensitive_k, seeds[value]) if o.sensitive_k else None
            return originals[value] if fallback[name] is None else fallback[name].approx

        spared, measured = choose(probe, {name: plans[value].approx for name, value in main.items()}, spare,
                                  {name: originals[value].size for name, value in main.items()}, o.min_cosine)  # fmt: skip
        for name in spared:
            spare(name)
            plans[main[name]] = fallback[name]
        instead = f"k={o.sensitive_k} per tensor" if o.sensitive_k else "left float"
        stats["spared"] = {name: f"cosine loss {loss:.5f} at k={o.k}: {instead}" for name, loss in spared.items()}
        stats["probe_cosine"] = round(measured, 6)


#: What ``onnxopt auto`` tries: after ``quantize`` when a candidate has it (int8 weights in 4-bit codebooks run
#: onnxruntime's int8 kernels; a float codebook before ``quantize`` would be decoded by it).
SEARCH = SearchHint(
    (
        SearchDim("k", (4, 8, 16, 32, 64, 128, 256)),
        SearchDim("per_channel"),
        SearchDim("encoding"),
        SearchDim("min_elements", (256, 1024, 4096)),
    ),
    stage=45,
)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="cluster",
            summary="k-means weight sharing: 4-bit / uint8 indices + a codebook decoded in-graph (after quantize: int8 weights in 4 bits), or snapped values",
            create=ClusterPass,
            options=ClusterOptions,
            search=SEARCH,
            needs_data=lambda options: options.min_cosine > 0,
            handles_subgraphs=True,
        )
    )
