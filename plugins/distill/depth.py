"""A shallower student from the teacher's own graph: repeated encoder blocks found by structure, some dropped.

The DistilBERT recipe (Sanh et al., 2019) without the original training code: keep some layers of the
encoder, initialised from the teacher, and distill. Which ones matters more than how long the student trains:
keeping every other one from the first drops the last layer, whose output the pooling head was trained on
(:func:`searched` chooses them from the teacher's own outputs instead; figures in bench/README.md).
The layers are found in the ONNX graph, not named by hand: the LayerNormalization nodes of the top-level graph
cut it into segments (the nodes on the way from one LayerNormalization to the next); each segment gets a
signature (its op types in order and the shapes of its weights); the longest run of segments that repeats with
a period ``p`` is the encoder, and ``p`` consecutive segments are one layer (post-LN BERT: attention + LN,
feed-forward + LN, p = 2). Dropping a layer sends its input straight to whatever read its output; onnx-ir's
dead-node pass then removes the layer's nodes and weights. Each kept layer's output is paired with the teacher's
hidden state the next kept layer was trained to read (``matched_states``): distill can train towards those too, so
every kept layer keeps seeing the input it knows (DistilBERT's hidden-state cosine loss, aligned by the graph).
Written here: no ONNX tool found that does this.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import onnx_ir as ir
import onnx_ir.passes.common

from onnxopt import UsageError


def _signature(nodes: list[ir.Node]) -> Hashable:
    def weights(node: ir.Node) -> tuple:
        shapes = []
        for value in node.inputs:
            if value is None:
                continue
            const = value.const_value
            if const is None and value.producer() is not None and value.producer().op_type == "Constant":
                const = (
                    value.producer().attributes.get("value").value if "value" in value.producer().attributes else None
                )
            shapes.append(tuple(const.shape) if const is not None else None)
        return tuple(shapes)

    return tuple((node.op_type, weights(node)) for node in nodes if node.op_type != "Constant")


def _segments(graph: ir.Graph) -> tuple[list[ir.Node], list[list[ir.Node]]]:
    """(the LayerNormalization nodes in order, segment k = the nodes on the way from LN k to LN k+1).

    A node belongs to segment k when the latest LN its data flows from is LN k and its result reaches LN k+1
    through nodes of the segment; a value the later layers read too (an attention mask built from the
    hidden state's shape) is shared, not part of the layer."""
    nodes = list(graph)
    norms = [node for node in nodes if node.op_type == "LayerNormalization"]
    index = {id(node): k for k, node in enumerate(norms)}
    level: dict[int, int] = {}  # node id -> index of the latest LN its data flows from (-1: none)
    for node in nodes:
        found = -1
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None:
                found = max(found, index.get(id(producer), level.get(id(producer), -1)))
        level[id(node)] = found
    member: set[int] = set()
    for node in reversed(nodes):
        k = level[id(node)]
        if not 0 <= k < len(norms) - 1:
            continue
        consumers = [use.node for value in node.outputs for use in value.uses()]
        shared = any(level.get(id(c), k) != k for c in consumers)
        if node is norms[k + 1] or (not shared and any(id(c) in member for c in consumers)):
            member.add(id(node))
    segments: list[list[ir.Node]] = [[] for _ in norms[:-1]]
    for node in nodes:
        if id(node) in member:
            segments[level[id(node)]].append(node)
    return norms, segments


def _longest_repeat(signatures: list[Hashable]) -> tuple[int, int, int]:
    """(start, period, count) of the longest periodic run of at least two periods (count 0: none)."""
    best = (0, 0, 0)
    total = len(signatures)
    for period in range(1, total // 2 + 1):
        for start in range(total - 2 * period + 1):
            count = 1
            while (
                start + (count + 1) * period <= total
                and signatures[start + count * period : start + (count + 1) * period]
                == signatures[start : start + period]
            ):
                count += 1
            if count >= 2 and count * period > best[1] * best[2]:
                best = (start, period, count)
    return best


def encoder_layers(model: ir.Model) -> list[tuple[ir.Value, ir.Value]]:
    """The (input, output) values of each repeated encoder layer, in order; [] when there is none."""
    norms, segments = _segments(model.graph)
    start, period, count = _longest_repeat([_signature(s) for s in segments])
    return [(norms[start + j * period].outputs[0], norms[start + (j + 1) * period].outputs[0]) for j in range(count)]


def kept(count: int, depth: float) -> list[int]:
    """Which of ``count`` layers a student at ``depth`` keeps: evenly spread from the first (0.5: 0, 2, 4, ...)."""
    keep = _kept_count(count, depth)
    return sorted({int(i * count / keep) for i in range(keep)})


def searched(model: ir.Model, depth: float, score: Callable[[ir.Model], float]) -> tuple[list[int], list[float]]:
    """The layers to keep, found greedily: from all of them, drop the one whose absence ``score`` (higher: closer
    to the teacher) minds least, until ``depth`` is left; (the layers kept, the score after each drop).

    Greedy, not exhaustive: n + (n - 1) + ... students are scored rather than C(n, k) (57 instead of 924 for
    12 -> 6 layers)."""
    count = len(_layers_or_error(model))
    keep, trail = list(range(count)), []
    while len(keep) > _kept_count(count, depth):
        trials = [(score(shallower(model, depth, [k for k in keep if k != j])[0]), j) for j in keep]
        best, dropped = max(trials, key=lambda trial: trial[0])  # equal scores: the lowest-numbered layer goes
        keep.remove(dropped)
        trail.append(best)
    return keep, trail


def _kept_count(count: int, depth: float) -> int:
    return max(1, round(count * depth))


def _layers_or_error(model: ir.Model) -> list[tuple[ir.Value, ir.Value]]:
    layers = encoder_layers(model)
    if len(layers) < 2:
        raise UsageError(
            "depth < 1 needs repeated LayerNormalization-delimited blocks (a transformer encoder); none found"
        )
    return layers


def shallower(model: ir.Model, depth: float, keep: list[int] | None = None) -> tuple[ir.Model, dict[str, object]]:
    """A copy of ``model`` with the encoder layers ``keep`` (default: :func:`kept` at ``depth``); (the model,
    what was done)."""
    student = model.clone()
    layers = _layers_or_error(student)
    keep = kept(len(layers), depth) if keep is None else keep
    teacher_names = [layer_output.name for _, layer_output in layers]  # before a dropped output renames its input
    for j in reversed(range(len(layers))):
        if j in keep:
            continue
        layer_input, layer_output = layers[j]
        name = layer_output.name if layer_output.is_graph_output() else None
        ir.convenience.replace_all_uses_with(layer_output, layer_input, replace_graph_outputs=True)
        if name is not None:
            layer_input.name = name  # the graph keeps its output names
    onnx_ir.passes.common.RemoveUnusedNodesPass()(student)
    return student, {"encoder_layers": len(layers), "kept_layers": keep,
                     "matched_states": _matched_states(layers, keep, teacher_names)}  # fmt: skip


def _matched_states(
    layers: list[tuple[ir.Value, ir.Value]], keep: list[int], teacher_names: list[str]
) -> dict[str, str]:
    """{a kept layer's output in the student: the teacher's hidden state that what follows it was trained to read}
    — the input of the next kept layer in the teacher (the output of the layer before it), or the teacher's last
    layer's output after the last kept one (what the pooling head reads; the graph's output when it is one)."""
    ends = [*keep[1:], len(layers)]
    return {layers[j][1].name: teacher_names[end - 1] for j, end in zip(keep, ends)}
