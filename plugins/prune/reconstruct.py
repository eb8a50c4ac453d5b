"""Least-squares reconstruction of a structurally pruned graph: each layer re-fitted to the unpruned one's output.

Cutting channels leaves every later layer reading less than it was trained on, so the error compounds down the
network (PP-OCRv4 det at 30 %: text-mask IoU 0). Channel pruning with reconstruction (He et al. 2017, ThiNet)
repairs it without training: in topological order, each Conv / Gemm / MatMul the cut reaches gets the weights and
bias that make its output on the data closest, in least squares, to the same layer's output in the unpruned graph
(its kept channels only), reading the inputs the already re-fitted pruned graph gives it — so each layer also
absorbs the error left above it. A ridge term pulls towards the layer's pruned weights, so a layer the data does not
pin down stays where it was; its strength is chosen per layer on a fifth of the sampled rows held out of the fit.
With ``noise_steps``, each layer is fitted to the least squares expected when its input carries uniform noise of
that many uint8 steps of its range (a ridge towards zero, Bishop 1995's training with noise): a fit that is exact in
float can lean on nearly collinear channels whose weights cancel, and static int8's rounding then no longer cancels
(PP-OCRv4 det and rec: bench/README.md, distill_real.py). The normal equations are summed over a sample of output
positions per feed, so memory stays bounded by one feed's activations; both graphs run in onnxruntime. Written here:
no library re-fits ONNX layers (torch-pruning and NNCF prune torch modules and recover by fine-tuning).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common  # not loaded by importing onnx_ir

from onnxopt.graph import new_initializer

if TYPE_CHECKING:
    import onnxruntime as ort

    from onnxopt import RunContext
    from onnxopt.data import Dataset

    from .structured import Pruned

#: The layers re-fitted (with a constant weight; a Conv of any group and spatial rank).
LAYERS = frozenset({"Conv", "Gemm", "MatMul"})
#: The ridges towards the pruned weights tried, relative to the mean diagonal of each layer's Gram matrix; the
#: fraction of the sampled rows held out to choose one.
RIDGES, HELD_OUT = (1e-4, 1e-3, 1e-2, 1e-1, 1.0), 0.2
#: Output positions sampled per layer: enough rows per unknown (ROWS_PER_UNKNOWN) and never fewer than MIN_ROWS.
ROWS_PER_UNKNOWN, MIN_ROWS = 8, 16384
#: The steps of a uint8 activation's range (onnxruntime's static quantization, per tensor).
UINT8_STEPS = 255
#: Memory for the unpruned model's sampled outputs held at once: the layers of a chunk this size share one run of
#: the unpruned model per feed.
CACHE_BYTES = 256 << 20


@dataclass
class Layer:
    """A layer to re-fit: its node, weight (as [groups, inputs per group, outputs per group]) and where its
    output's kept channels lie in the unpruned graph's."""

    node: ir.Node
    weight: np.ndarray  # [groups, d, o] (for a Conv, d = input channels per group x kernel positions)
    bias: np.ndarray | None  # [groups, o]
    kept: np.ndarray | None  # the unpruned output's channels this layer's outputs are; None: all of them

    @property
    def channel_axis(self) -> int:
        return 1 if self.node.op_type == "Conv" else -1


def _attribute(node: ir.Node, name: str, default: object) -> object:
    attribute = node.attributes.get(name)
    return default if attribute is None else attribute.value


def _layer(node: ir.Node, kept: np.ndarray | None) -> Layer | str:
    """The layer ``node`` is, or why it is left as pruned."""
    weight = ir.convenience.get_const_tensor(node.inputs[1]).numpy().astype(np.float64)
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    bias = None if bias_value is None else ir.convenience.get_const_tensor(bias_value)
    if bias_value is not None and bias is None:
        return "its bias is not a constant"
    bias = None if bias is None else bias.numpy().astype(np.float64)
    if node.op_type == "Conv":
        if _attribute(node, "auto_pad", "NOTSET") != "NOTSET":
            return "auto_pad"
        groups = int(_attribute(node, "group", 1))
        out_channels = weight.shape[0]
        grouped = weight.reshape(groups, out_channels // groups, -1).transpose(0, 2, 1)
        return Layer(node, grouped, None if bias is None else bias.reshape(groups, -1), kept)
    if weight.ndim != 2:
        return f"a {weight.ndim}-D weight"
    if node.op_type == "Gemm":
        if _attribute(node, "transA", 0) or _attribute(node, "alpha", 1.0) != 1 or _attribute(node, "beta", 1.0) != 1:
            return "Gemm with transA, alpha or beta"
        if _attribute(node, "transB", 0):
            weight = weight.T
        if bias is not None and bias.shape != (weight.shape[1],):
            return "a broadcast Gemm bias"
    return Layer(node, weight[None], None if bias is None else bias[None], kept)


def _positions(layer: Layer, shape: tuple[int, ...], count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``count`` output positions of the layer, sampled from an output of ``shape``: (sample, *spatial) for a
    Conv, (row,) of the output's rows otherwise."""
    if layer.node.op_type == "Conv":
        grid = (shape[0], *shape[2:])
        return np.unravel_index(rng.choice(math.prod(grid), min(count, math.prod(grid)), replace=False), grid)
    rows = math.prod(shape[:-1])
    return (rng.choice(rows, min(count, rows), replace=False),)


def _targets_at(layer: Layer, output: np.ndarray, where: tuple[np.ndarray, ...]) -> np.ndarray:
    """The output's kept channels at ``where``: [groups, rows, outputs per group]."""
    if layer.kept is not None:
        output = np.take(output, layer.kept, axis=layer.channel_axis)
    if layer.node.op_type == "Conv":
        rows = output[(where[0], slice(None), *where[1:])]  # [rows, channels]: the sampled axis comes first
    else:
        rows = output.reshape(-1, output.shape[-1])[where[0]]
    return rows.reshape(len(rows), layer.weight.shape[0], -1).transpose(1, 0, 2)


def _inputs_at(layer: Layer, inputs: np.ndarray, where: tuple[np.ndarray, ...]) -> np.ndarray:
    """What the layer reads to make its outputs at ``where`` (a Conv's patches), with a 1 for the bias:
    [groups, rows, unknowns per group]."""
    if layer.node.op_type == "Conv":
        rows = _patches(layer.node, inputs, where)
    else:
        rows = inputs.reshape(-1, inputs.shape[-1])[where[0]]
    rows = rows.reshape(len(rows), layer.weight.shape[0], -1).transpose(1, 0, 2)  # a group's channels are consecutive
    if layer.bias is not None:
        rows = np.concatenate([rows, np.ones(rows.shape[:2] + (1,), rows.dtype)], axis=-1)
    return rows


def _patches(node: ir.Node, inputs: np.ndarray, where: tuple[np.ndarray, ...]) -> np.ndarray:
    """A Conv's input patches (im2col) at the output positions ``where`` = (sample, *spatial): [rows, C, K]."""
    rank = inputs.ndim - 2
    kernel = _attribute(node, "kernel_shape", None) or ir.convenience.get_const_tensor(node.inputs[1]).shape[2:]
    strides = _attribute(node, "strides", None) or [1] * rank
    dilations = _attribute(node, "dilations", None) or [1] * rank
    pads = _attribute(node, "pads", None) or [0] * (2 * rank)
    padded = np.pad(inputs, [(0, 0), (0, 0)] + [(pads[i], pads[i + rank]) for i in range(rank)])
    grid = np.meshgrid(*[np.arange(int(k)) * d for k, d in zip(kernel, dilations)], indexing="ij")
    offsets = np.stack(grid, -1).reshape(-1, rank)  # [kernel positions, rank]
    coords = [(at * step)[:, None, None] + offsets[None, None, :, axis]
              for axis, (at, step) in enumerate(zip(where[1:], strides))]  # fmt: skip
    return padded[(where[0][:, None, None], np.arange(inputs.shape[1])[None, :, None], *coords)]


class _Normal:
    """The normal equations of one layer, summed over feeds."""

    def __init__(self, groups: int, unknowns: int, outputs: int) -> None:
        self.gram = np.zeros((groups, unknowns, unknowns))
        self.cross = np.zeros((groups, unknowns, outputs))
        self.target = 0.0
        self.rows = 0
        #: per unknown, the variance of the noise its input carries (zero: exact); E[(X + E)^T (X + E)] adds
        #: rows x this to the Gram matrix's diagonal, so the fit is the least squares expected under the noise
        self.noise = np.zeros(unknowns)

    def add(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        inputs, targets = inputs.astype(np.float64), targets.astype(np.float64)
        self.gram += inputs.transpose(0, 2, 1) @ inputs
        self.cross += inputs.transpose(0, 2, 1) @ targets
        self.target += float((targets * targets).sum())
        self.rows += inputs.shape[1]

    def merged(self, other: _Normal) -> _Normal:
        whole = _Normal(*self.cross.shape)
        whole.gram, whole.cross, whole.target, whole.rows, whole.noise = (
            self.gram + other.gram,
            self.cross + other.cross,
            self.target + other.target,
            self.rows + other.rows,
            self.noise,
        )
        return whole

    def _noisy_gram(self) -> np.ndarray:
        return self.gram + np.diag(self.rows * self.noise)

    def error(self, weights: np.ndarray) -> float:
        """Sum of squared residuals of ``weights`` [groups, unknowns, outputs] on the summed rows (expected, with
        the inputs' noise)."""
        return float(np.sum(weights * (self._noisy_gram() @ weights - 2 * self.cross)) + self.target)

    def solve(self, start: np.ndarray, ridge: float) -> np.ndarray:
        """Least squares with a ridge towards ``start`` (``ridge`` x the Gram matrix's mean diagonal)."""
        scale = ridge * np.maximum(np.diagonal(self.gram, axis1=1, axis2=2).mean(axis=1), 1e-12)
        penalty = scale[:, None, None] * np.eye(self.gram.shape[-1])
        return np.linalg.solve(self._noisy_gram() + penalty, self.cross + penalty @ start)


class _Split:
    """A layer's sampled rows split at random: most fit the weights at each of :data:`RIDGES`, the rest
    (:data:`HELD_OUT`) choose the ridge whose fit predicts them best; then all the rows fit at that ridge."""

    def __init__(self, groups: int, unknowns: int, outputs: int, rng: np.random.Generator) -> None:
        self.fit, self.held = _Normal(groups, unknowns, outputs), _Normal(groups, unknowns, outputs)
        self.rng = rng

    def set_noise(self, noise: np.ndarray) -> None:
        self.fit.noise = self.held.noise = noise

    def add(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        held = self.rng.random(inputs.shape[1]) < HELD_OUT
        self.fit.add(inputs[:, ~held], targets[:, ~held])
        self.held.add(inputs[:, held], targets[:, held])

    def solve(self, start: np.ndarray) -> tuple[np.ndarray, float, _Normal]:
        """The weights, the ridge chosen, and the normal equations of all the rows."""
        ridge = min(RIDGES, key=lambda r: self.held.error(self.fit.solve(start, r)))
        whole = self.fit.merged(self.held)
        return whole.solve(start, ridge), ridge, whole


def _feeds(dataset: Dataset, samples: int) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's first feeds holding ``samples`` samples (whole feeds)."""
    wanted = math.ceil(samples * dataset.num_feeds / max(dataset.num_samples, 1))
    for index, feed in enumerate(dataset.feeds()):
        if index >= wanted:
            return
        yield feed


def _affected(graph: ir.Graph, cut: set[ir.Node]) -> list[ir.Node]:
    """The Conv / Gemm / MatMul nodes with a constant weight the cut reaches: cut themselves or reading a value
    downstream of a cut."""
    changed: set[ir.Value] = set()
    layers = []
    for node in graph:
        if node in cut or any(value in changed for value in node.inputs if value is not None):
            changed.update(node.outputs)
            if node.op_type in LAYERS and ir.convenience.get_const_tensor(node.inputs[1]) is not None:
                layers.append(node)  # a MatMul of two activations (attention) has nothing to re-fit
    return layers


def reconstruct(model: ir.Model, original: ir.Model, pruned: Pruned, context: RunContext,
                samples: int, noise_steps: float = 0.0) -> dict[str, str]:  # fmt: skip
    """Re-fit every layer of the main graph the cut reaches to the unpruned model ``original``, on ``samples``
    samples of the run's dataset, as if each layer's input carried noise of ``noise_steps`` uint8 steps of its
    range; the report line of each layer (its relative squared error on the sampled rows, before -> after)."""
    from onnxopt import open_session, save_with_outputs

    report: dict[str, str] = {}
    layers: list[Layer] = []
    for node in _affected(model.graph, pruned.cut):
        found = _layer(node, pruned.kept.get(node.outputs[0].name))
        if isinstance(found, str):
            report[_name(node)] = f"left as pruned: {found}"
        else:
            layers.append(found)
    feeds = list(_feeds(context.dataset, samples))
    rng = context.rng(salt=7)
    probe = context.workdir / "prune_reconstruct.onnx"
    unpruned = {value.name: value for node in original.graph for value in node.outputs}
    progress = context.progress(total=len(layers), desc="prune-structured: reconstruct")
    for chunk in _chunks(layers, len(feeds)):  # one run of the unpruned model per feed for a whole chunk
        chunk_outputs = [unpruned[layer.node.outputs[0].name] for layer in chunk]
        targets = _teacher_rows(open_session(save_with_outputs(original, chunk_outputs, probe)), chunk, feeds, rng)
        for layer, rows in zip(chunk, targets):
            student = open_session(save_with_outputs(model, [layer.node.inputs[0]], probe))
            report[_name(layer.node)] = _refit(layer, student, feeds, rows, rng, noise_steps)
            progress.update(1)
    progress.close()
    ir.passes.common.RemoveUnusedNodesPass()(model)  # a Constant node whose weight was replaced
    return report


def _name(node: ir.Node) -> str:
    return node.name or node.outputs[0].name


def _rows_per_feed(layer: Layer, feeds: int) -> int:
    unknowns = layer.weight.shape[1] + (layer.bias is not None)
    return math.ceil(max(ROWS_PER_UNKNOWN * unknowns, MIN_ROWS) / max(feeds, 1))


def _chunks(layers: list[Layer], feeds: int) -> Iterator[list[Layer]]:
    """Consecutive layers whose sampled teacher rows fit in :data:`CACHE_BYTES` together (at least one)."""
    chunk: list[Layer] = []
    size = 0
    for layer in layers:
        groups, _, outputs = layer.weight.shape
        need = _rows_per_feed(layer, feeds) * feeds * groups * outputs * 4
        if chunk and size + need > CACHE_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(layer)
        size += need
    if chunk:
        yield chunk


def _teacher_rows(teacher: ort.InferenceSession, chunk: list[Layer], feeds: list[dict[str, np.ndarray]],
                  rng: np.random.Generator) -> list[list[tuple[tuple[np.ndarray, ...], np.ndarray]]]:  # fmt: skip
    """For each layer of ``chunk``, per feed: the sampled positions and the unpruned layer's output there."""
    names = [layer.node.outputs[0].name for layer in chunk]
    found: list[list[tuple[tuple[np.ndarray, ...], np.ndarray]]] = [[] for _ in chunk]
    for feed in feeds:
        for layer, rows, output in zip(chunk, found, teacher.run(names, feed)):
            where = _positions(layer, output.shape, _rows_per_feed(layer, len(feeds)), rng)
            rows.append((where, _targets_at(layer, output, where).astype(np.float32)))
    return found


def _refit(layer: Layer, student: ort.InferenceSession, feeds: list[dict[str, np.ndarray]],
           targets: list[tuple[tuple[np.ndarray, ...], np.ndarray]], rng: np.random.Generator,
           noise_steps: float) -> str:  # fmt: skip
    """Sum the layer's normal equations over the feeds, solve (under noise of ``noise_steps`` uint8 steps of the
    input's range on every weight's input: uniform, variance step^2 / 12), and write the new weights if they fit
    better."""
    groups, unknowns, outputs = layer.weight.shape
    normal = _Split(groups, unknowns + (layer.bias is not None), outputs, rng)
    low, high = math.inf, -math.inf
    for feed, (where, target) in zip(feeds, targets):
        (inputs,) = student.run([layer.node.inputs[0].name], feed)
        normal.add(_inputs_at(layer, inputs, where), target)
        low, high = min(low, float(inputs.min())), max(high, float(inputs.max()))
    step = noise_steps * (high - low) / UINT8_STEPS
    normal.set_noise(np.concatenate([np.full(unknowns, step * step / 12), np.zeros(int(layer.bias is not None))]))
    start = layer.weight if layer.bias is None else np.concatenate([layer.weight, layer.bias[:, None, :]], axis=1)
    fitted, ridge, whole = normal.solve(start)
    before, after = whole.error(start), whole.error(fitted)
    total = max(whole.target, 1e-30)
    if not after < before:
        return f"relative error {before / total:.3g}, kept as pruned"
    _write(layer, fitted)
    return f"relative error {before / total:.3g} -> {after / total:.3g} (ridge {ridge:g})"


def _write(layer: Layer, fitted: np.ndarray) -> None:
    """Put the fitted weights (and bias) into the layer's node, in its own weight layout."""
    node = layer.node
    groups, unknowns, outputs = layer.weight.shape
    weight, bias = fitted[:, :unknowns, :], fitted[:, unknowns:, :]
    old = ir.convenience.get_const_tensor(node.inputs[1])
    if node.op_type == "Conv":
        array = weight.transpose(0, 2, 1).reshape(old.shape.numpy())
    elif node.op_type == "Gemm" and _attribute(node, "transB", 0):
        array = weight[0].T
    else:
        array = weight[0]
    _replace(node, 1, array.astype(old.dtype.numpy()))
    if layer.bias is not None:
        _replace(node, 2, bias.reshape(-1).astype(old.dtype.numpy()))


def _replace(node: ir.Node, index: int, array: np.ndarray) -> None:
    """Give input ``index`` of ``node`` the values ``array``: in place where the node alone reads the initializer."""
    value, graph = node.inputs[index], node.graph
    if value.producer() is None and value.name in graph.initializers and len(value.uses()) == 1:
        value.const_value = ir.tensor(array, name=value.name)
    else:
        node.replace_input_with(index, new_initializer(graph, f"{value.name}_reconstructed", array))
