"""Structured pruning: remove whole output channels / neurons so the graph really shrinks.

:mod:`.channels` finds the groups of channels that can go and every tensor that must shrink with them; this
module ranks the channels of each group, keeps the best ``1 - sparsity`` of them, and cuts the tensors.
Ranking is by the L1 or L2 norm of each channel's weights, or — given data — by the mean absolute activation
of each channel over the run's dataset, measured with onnxruntime. Each producer's scores are divided by their
mean before the producers of a merged group (e.g. both sides of a residual Add) are summed, so no layer
dominates by scale alone. Written here: no well-kept library prunes ONNX graphs structurally.
:class:`StructuredPrunePass` is the ``prune-structured`` pass; with ``reconstruct`` it hands what it cut
(:class:`Pruned`) to :mod:`.reconstruct`, which re-fits the layers the cut reaches on the data.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # not loaded by importing onnx_ir

from onnxopt import InPlacePluginPass
from onnxopt.graph import new_initializer

from .channels import Analysis, analyse, kept_positions
from .reconstruct import reconstruct

#: Ops between a layer and what its consumers read, for the activation criterion (channels keep their axis).
_ACTIVATION_CHAIN = frozenset(
    {
        "Add",
        "Mul",
        "BatchNormalization",
        "Relu",
        "LeakyRelu",
        "Clip",
        "HardSwish",
        "Sigmoid",
        "Gelu",
        "Tanh",
        "Identity",
    }
)

if TYPE_CHECKING:
    from onnxopt import RunContext

    from . import StructuredOptions


def _weight_scores(analysis: Analysis, group: int, norm: str) -> np.ndarray:
    producer = analysis.producers[group]
    weight = ir.convenience.get_const_tensor(producer.node.inputs[1]).numpy().astype(np.float64)
    rows = np.moveaxis(weight, producer.weight_axis, 0).reshape(producer.channels, -1)
    return np.abs(rows).sum(axis=1) if norm == "l1" else np.sqrt((rows * rows).sum(axis=1))


def _activated(value: ir.Value) -> ir.Value:
    """The value after the producer's bias, norm and activation (a lone chain of them): what the next layer reads."""
    while len(value.uses()) == 1 and not value.is_graph_output():
        node = value.uses()[0].node
        if node.op_type not in _ACTIVATION_CHAIN or len(node.outputs) != 1 or value is not node.inputs[0]:
            break
        if node.op_type in ("Add", "Mul") and ir.convenience.get_const_tensor(node.inputs[1]) is None:
            break  # a residual or gating join: beyond it the channels are no longer this layer's alone
        value = node.outputs[0]
    return value


def _activation_scores(model: ir.Model, analysis: Analysis, context: RunContext) -> dict[int, np.ndarray]:
    """Mean |activation| of every producer's output channels over the dataset, run in onnxruntime."""
    from onnxopt import open_session, save_with_outputs

    outputs = {group: _activated(producer.node.outputs[0]) for group, producer in analysis.producers.items()}
    session = open_session(save_with_outputs(model, outputs.values(), context.workdir / "prune_activations.onnx"))
    names = [value.name for value in outputs.values()]
    sums: dict[int, np.ndarray] = {}
    for feed in context.progress(
        context.dataset.feeds(), total=context.dataset.num_feeds, desc="prune-structured: activations"
    ):
        for group, array in zip(outputs, session.run(names, feed)):
            axis = 1 if analysis.producers[group].node.op_type.startswith("Conv") else array.ndim - 1
            per_channel = np.abs(np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)).mean(axis=1)
            sums[group] = sums.get(group, 0) + per_channel
    return sums


def _keep_count(channels: int, options: StructuredOptions) -> int:
    """How many of ``channels`` stay: ``1 - sparsity`` of them, rounded to the nearest multiple of ``round_to``
    (at least one multiple), since onnxruntime's blocked (NCHWc) Conv kernels take only channel counts that
    are multiples of their block; a layer no wider than ``round_to`` is left whole."""
    wanted = channels * (1.0 - options.sparsity)
    if options.round_to > 1:
        if channels <= options.round_to:
            return channels
        return min(channels, max(options.round_to, round(wanted / options.round_to) * options.round_to))
    return min(channels, max(1, math.ceil(wanted - 1e-9)))


def _cut(array: np.ndarray, cuts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    for axis, positions in cuts:
        array = np.take(array, positions, axis=axis % array.ndim)
    return array


@dataclass
class Pruned:
    """What pruning did: the report line of every layer, and for reconstruction the main graph's nodes whose
    tensors were cut and the channels each cut output value kept (positions in the unpruned value)."""

    layers: dict[str, str] = field(default_factory=dict)
    cut: set[ir.Node] = field(default_factory=set)
    kept: dict[str, np.ndarray] = field(default_factory=dict)


def _apply(graph: ir.Graph, analysis: Analysis, keep: dict[int, np.ndarray], pruned: Pruned) -> None:
    """Cut every tensor of the kept groups; tensors other nodes share get a private copy first."""
    cuts: dict[tuple[ir.Node, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
    for cut in analysis.cuts:
        if cut.layout is None:
            root = analysis.root(cut.group)
            if root not in keep:
                continue
            positions = keep[root]
        else:
            positions = kept_positions(cut.layout, keep, analysis)
            if positions.size == cut.layout.total * (cut.layout.per_channel or 1):
                continue
        cuts[cut.node, cut.index].append((cut.axis, positions))
    for (node, index), node_cuts in cuts.items():
        value = node.inputs[index]
        array = _cut(ir.convenience.get_const_tensor(value).numpy(), node_cuts)
        if value.producer() is None and value.name in graph.initializers and len(value.uses()) == 1:
            value.const_value = ir.tensor(array, name=value.name)
            value.shape = ir.Shape(array.shape)
        else:
            node.replace_input_with(index, new_initializer(graph, f"{value.name}_pruned", array))
    for node, layout in analysis.depthwise:
        positions = kept_positions(layout, keep, analysis)
        node.attributes["group"] = ir.AttrInt64("group", int(positions.size))
        pruned.kept[node.outputs[0].name] = positions
    for group, producer in analysis.producers.items():
        if analysis.root(group) in keep:
            pruned.kept[producer.node.outputs[0].name] = keep[analysis.root(group)]
    pruned.cut.update(node for node, _ in cuts)
    pruned.cut.update(node for node, _ in analysis.depthwise)
    for value in analysis.carriers:
        if not value.is_graph_output():
            value.shape = None


def prune_channels(model: ir.Model, options: StructuredOptions, context: RunContext) -> Pruned:
    """Remove ``options.sparsity`` of the channels of every unblocked group, in the main graph and in every
    If / Loop / Scan body (a group never crosses a graph's boundary: what a body captures or returns blocks
    it)."""
    try:
        ir.passes.common.ShapeInferencePass()(model)  # ranks and Concat widths; the walk copes without them
    except Exception as exc:  # noqa: BLE001 - shape inference is a help here, not a requirement
        context.logger.info("prune-structured: shape inference failed (%s); fewer layers may be prunable", exc)
    pruned = Pruned()
    for graph in model.graphs():
        analysis = analyse(graph, options.min_channels)
        if not analysis.producers:
            continue
        if options.criterion != "activation":
            scores = partial(_weight_scores, analysis, norm=options.criterion)
            _prune_graph(graph, analysis, options, scores, pruned)
        elif graph is model.graph:
            _prune_graph(graph, analysis, options, _activation_scores(model, analysis, context).__getitem__, pruned)
        else:  # a body's values cannot be probed as model outputs
            _prune_graph(graph, analysis, options, partial(_weight_scores, analysis, norm="l1"), pruned,
                         " (by L1: activations are measured in the main graph only)")  # fmt: skip
    ir.passes.common.RemoveUnusedNodesPass()(model)
    return pruned


def _prune_graph(graph: ir.Graph, analysis: Analysis, options: StructuredOptions, scores: Callable[[int], np.ndarray],
                 pruned: Pruned, note: str = "") -> None:  # fmt: skip
    """Rank (``scores`` of a producer's channels) and cut the channels of one graph's groups, into ``pruned``."""
    keep: dict[int, np.ndarray] = {}
    report = pruned.layers
    for root, groups in analysis.members().items():
        names = [analysis.producers[g].node.name or f"#{g}" for g in groups]
        channels = analysis.producers[root].channels
        reason = analysis.blocked_reason(root)
        if reason is None:
            ranked = sum(_normalised(scores(g)) for g in groups)
            count = _keep_count(channels, options)
            if count < channels:
                keep[root] = np.sort(np.argsort(-ranked, kind="stable")[:count])
        for name in names:
            report[name] = (
                f"{channels} -> {keep[root].size}{note}"
                if root in keep
                else f"{channels} kept: {reason or 'nothing to remove'}"
            )
    _apply(graph, analysis, keep, pruned)


def _normalised(scores: np.ndarray) -> np.ndarray:
    return scores / max(float(scores.mean()), 1e-12)


class StructuredPrunePass(InPlacePluginPass):
    """``prune-structured``: remove channels / neurons (and re-fit what reads them); the report line of every layer
    (and with ``reconstruct``, every re-fitted layer's error before -> after)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        original = model.clone() if self.options.reconstruct else None  # the re-fit's targets; tensors shared
        pruned = prune_channels(model, self.options, self.context)
        self.stats["layers"] = pruned.layers
        self.stats["layers_pruned"] = sum("->" in line for line in pruned.layers.values())
        if original is not None and pruned.cut:
            self._warn_if_synthetic()
            self.stats["reconstructed"] = reconstruct(
                model, original, pruned, self.context, self.options.reconstruct_samples, self.options.reconstruct_noise
            )
        return ir.passes.PassResult(model, modified=self.stats["layers_pruned"] > 0)

    def _warn_if_synthetic(self) -> None:
        dataset = self.context.dataset
        if dataset.synthetic:
            self.context.logger.warning(
                "prune-structured: reconstructing on random inputs (%s): the layers are re-fitted to data the "
                "model never sees; give --data with real inputs",
                dataset.name,
            )
