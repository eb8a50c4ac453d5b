"""Which output channels of which layers can be removed together, and every tensor that must shrink with them.

Written here: no ONNX library traces channel dependencies (torch-pruning's dependency graph does it for torch
modules; onnx-ir gives the use-def chains it is built on).

One forward walk over one graph (the main graph or an If / Loop / Scan body) in topological order. Every prunable
*producer* — a Conv or ConvTranspose with ``group == 1``, a Gemm or MatMul with a constant 2-D weight — starts a
*group* of C channels. Each value that carries channels has a :class:`Layout`: the axis its channels lie on and the
segments they come from (Concat joins segments; a segment of ``None`` belongs to no group and is never cut).
Channels pass unchanged through elementwise ops, activations, pooling, Resize, BatchNormalization, depthwise
Conv and Flatten (whose layout then counts ``K / C`` elements per channel, read off the consuming Gemm). They
end in a *sink* whose weight loses the matching input rows: the next Conv / ConvTranspose / Gemm / MatMul.

Two values meeting in an elementwise op (residual Add, squeeze-excite Mul) must lose the same channels, so their
groups are merged. Anything else that reads a channel-carrying value — Reshape, Transpose, Softmax or
LayerNormalization over channels, Shape, a subgraph, a graph output — *blocks* every group it reads, with the
reason kept for the report. A blocked group is left whole, so the pruned graph's shapes always agree and the
model's inputs and outputs keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

#: Ops whose output has the input's channels on the same axis, element by element.
_ELEMENTWISE_UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Gelu",
    "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
    "Identity", "Dropout", "Cast", "Clip", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
})  # fmt: skip
_ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow"})
#: Ops over the spatial axes of an NCHW tensor: channels stay on axis 1.
_SPATIAL = frozenset(
    {"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Resize", "Upsample"}
)
_PER_CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}


@dataclass(frozen=True)
class Segment:
    group: int | None  # None: channels of a source that is never pruned
    length: int


@dataclass(frozen=True)
class Layout:
    """Where a value's channels lie: an axis (>= 0 from the front, < 0 from the end) and their segments."""

    axis: int
    segments: tuple[Segment, ...]
    per_channel: int | None = 1  # consecutive elements per channel along the axis; None: after Flatten, ask the sink

    @property
    def total(self) -> int:
        return sum(s.length for s in self.segments)


@dataclass
class Producer:
    node: ir.Node
    weight_axis: int  # output channels of the weight
    bias_index: int | None  # input index of a bias to cut along its last axis
    channels: int


@dataclass
class Cut:
    """Input ``index`` of ``node`` loses positions along ``axis``: the producer's own channels, or a layout's."""

    node: ir.Node
    index: int
    axis: int
    layout: Layout | None = None  # None: the producer's own output channels
    group: int | None = None


@dataclass
class Analysis:
    producers: dict[int, Producer] = field(default_factory=dict)  # group id -> producer
    cuts: list[Cut] = field(default_factory=list)
    depthwise: list[tuple[ir.Node, Layout]] = field(default_factory=list)  # their ``group`` attribute follows
    carriers: list[ir.Value] = field(default_factory=list)  # values whose shapes change
    _parent: dict[int, int] = field(default_factory=dict)
    _blocked: dict[int, str] = field(default_factory=dict)

    def root(self, group: int) -> int:
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def new_group(self, producer: Producer) -> int:
        group = len(self._parent)
        self._parent[group] = group
        self.producers[group] = producer
        return group

    def merge(self, a: int, b: int) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self._parent[rb] = ra
            if rb in self._blocked and ra not in self._blocked:
                self._blocked[ra] = self._blocked[rb]

    def block(self, layout: Layout, reason: str) -> None:
        for segment in layout.segments:
            if segment.group is not None:
                self._blocked.setdefault(self.root(segment.group), reason)

    def blocked_reason(self, group: int) -> str | None:
        return self._blocked.get(self.root(group))

    def members(self) -> dict[int, list[int]]:
        """Root group -> the groups (producers) merged into it."""
        found: dict[int, list[int]] = {}
        for group in self._parent:
            found.setdefault(self.root(group), []).append(group)
        return found


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _axis_from_front(layout: Layout, rank: int | None) -> int | None:
    if layout.axis >= 0:
        return layout.axis
    return None if rank is None else rank + layout.axis


def _producer(node: ir.Node) -> Producer | None:
    """The node as a prunable producer of output channels, if it is one."""
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return None
    inputs = node.inputs
    weight = _const(inputs[1]) if len(inputs) > 1 else None
    if weight is None or weight.dtype.kind != "f" or _const(inputs[0]) is not None:
        return None
    if len(inputs) > 2 and inputs[2] is not None and _const(inputs[2]) is None:
        return None  # a computed bias cannot be cut
    if node.op_type in ("Conv", "ConvTranspose") and node.attributes.get_int("group", 1) == 1 and weight.ndim >= 3:
        axis = 0 if node.op_type == "Conv" else 1
        bias = 2 if len(inputs) > 2 and inputs[2] is not None else None
        return Producer(node, axis, bias, weight.shape[axis])
    if node.op_type == "Gemm" and weight.ndim == 2 and not node.attributes.get_int("transA", 0):
        axis = 0 if node.attributes.get_int("transB", 0) else 1
        bias = 2 if len(inputs) > 2 and inputs[2] is not None else None
        if bias is not None:
            shape = _const(inputs[2])
            if (shape.size != 1 and shape.shape[-1] != weight.shape[axis]) or (shape.ndim == 2 and shape.shape[0] != 1):
                return None
            if shape.size == 1 and weight.shape[axis] != 1:
                bias = None  # a scalar bias broadcasts over any channel count
        return Producer(node, axis, bias, weight.shape[axis])
    if node.op_type == "MatMul" and weight.ndim == 2:
        return Producer(node, 1, None, weight.shape[1])
    return None


class _Walk:
    """The forward walk; see the module docstring."""

    def __init__(self, graph: ir.Graph, min_channels: int) -> None:
        self.graph = graph
        self.min_channels = min_channels
        self.result = Analysis()
        self.layouts: dict[ir.Value, Layout] = {}
        self.handled: set[tuple[ir.Node, int]] = set()

    def run(self) -> Analysis:
        for node in self.graph:
            if any(value in self.layouts for value in node.inputs if value is not None):
                self._consume(node)
            producer = _producer(node)
            if producer is not None and producer.channels >= self.min_channels:
                group = self.result.new_group(producer)
                self.result.cuts.append(Cut(node, 1, producer.weight_axis, group=group))
                if producer.bias_index is not None:
                    self.result.cuts.append(Cut(node, producer.bias_index, -1, group=group))
                self._carry(
                    node.outputs[0],
                    Layout(1 if node.op_type.startswith("Conv") else -1, (Segment(group, producer.channels),)),
                )
        for value, layout in self.layouts.items():
            if value.is_graph_output():
                self.result.block(layout, f"reaches the model output {value.name!r}")
            for use in value.uses():
                if (use.node, use.idx) not in self.handled:
                    self.result.block(layout, f"read by {use.node.op_type} {use.node.name!r}")
        return self.result

    def _carry(self, value: ir.Value, layout: Layout) -> None:
        self.layouts[value] = layout
        self.result.carriers.append(value)

    def _consume(self, node: ir.Node) -> None:
        if node.domain not in ("", "ai.onnx") or node.graph is not self.graph:
            return
        carried = {i: self.layouts[v] for i, v in enumerate(node.inputs) if v is not None and v in self.layouts}
        op = node.op_type
        if op in _ELEMENTWISE_UNARY or op in _ELEMENTWISE_BINARY:
            self._elementwise(node, carried)
        elif op in _SPATIAL and set(carried) == {0}:
            self._spatial(node, carried[0])
        elif op in _PER_CHANNEL_PARAMS and set(carried) == {0}:
            self._per_channel_params(node, carried[0])
        elif op == "Concat":
            self._concat(node, carried)
        elif op == "Flatten" and set(carried) == {0}:
            self._flatten(node, carried[0])
        elif op in ("Conv", "ConvTranspose", "Gemm", "MatMul") and set(carried) == {0}:
            self._sink_or_depthwise(node, carried[0])

    def _accept(self, node: ir.Node, indices: Iterable[int]) -> None:
        self.handled.update((node, i) for i in indices)

    def _same_layouts(self, node: ir.Node, layouts: list[Layout]) -> Layout | None:
        """Merge the groups of layouts that must lose the same channels; None (and block) if they can't."""
        first = layouts[0]
        ranks = {_rank(v) for v in node.inputs if v is not None and v in self.layouts}
        rank = ranks.pop() if len(ranks) == 1 else None
        for other in layouts[1:]:
            same_shape = [s.length for s in other.segments] == [s.length for s in first.segments]
            same_axis = other.axis == first.axis or (
                rank is not None and _axis_from_front(other, rank) == _axis_from_front(first, rank)
            )
            if not (same_shape and same_axis and other.per_channel == first.per_channel):
                for layout in layouts:
                    self.result.block(layout, f"channels meet unaligned in {node.op_type} {node.name!r}")
                return None
            for a, b in zip(first.segments, other.segments):
                if a.group is not None and b.group is not None:
                    self.result.merge(a.group, b.group)
                elif a.group is not None or b.group is not None:
                    self.result.block(
                        Layout(0, (a, b)), f"joined with unprunable channels in {node.op_type} {node.name!r}"
                    )
        return first

    def _elementwise(self, node: ir.Node, carried: dict[int, Layout]) -> None:
        layout = self._same_layouts(node, list(carried.values()))
        if layout is None:
            return
        out_rank = _rank(node.outputs[0]) or _rank(node.inputs[min(carried)])
        for index, value in enumerate(node.inputs):
            if index in carried or value is None:
                continue
            array = _const(value)
            dims = array.shape if array is not None else (None if value.shape is None else tuple(value.shape))
            if node.op_type in ("Clip", "Dropout") or (dims is not None and len(dims) == 0):
                continue  # scalar parameters
            axis = None
            if dims is not None and out_rank is not None:
                front = _axis_from_front(layout, out_rank)
                axis = None if front is None else front - (out_rank - len(dims))
            if dims is None or out_rank is None or axis is None:
                self.result.block(layout, f"{node.op_type} {node.name!r} has an operand of unknown shape")
                return
            if axis < 0 or dims[axis] == 1:
                continue  # broadcast along the channels
            if array is None or dims[axis] != layout.total * (layout.per_channel or 0):
                self.result.block(layout, f"{node.op_type} {node.name!r} mixes in a tensor with its own channels")
                return
            self.result.cuts.append(Cut(node, index, axis, layout))
        self._accept(node, range(len(node.inputs)))
        for output in node.outputs[:1] if node.op_type != "Dropout" else node.outputs:
            self._carry(output, layout)

    def _spatial(self, node: ir.Node, layout: Layout) -> None:
        if _axis_from_front(layout, _rank(node.inputs[0])) != 1:
            return
        if node.op_type in ("Resize", "Upsample") and len(node.inputs) > 3 and node.inputs[3] is not None:
            return  # explicit output sizes name the channel count
        if any(output.uses() or output.is_graph_output() for output in node.outputs[1:]):
            return  # MaxPool's indices count positions across channels
        self._accept(node, [0])
        self._carry(node.outputs[0], layout)

    def _per_channel_params(self, node: ir.Node, layout: Layout) -> None:
        if _axis_from_front(layout, _rank(node.inputs[0])) != 1 or layout.per_channel != 1:
            return
        if any(_const(node.inputs[i]) is None for i in _PER_CHANNEL_PARAMS[node.op_type]):
            return
        if len(node.outputs) > 1 and any(output.uses() for output in node.outputs[1:]):
            return  # training-mode statistics
        for index in _PER_CHANNEL_PARAMS[node.op_type]:
            self.result.cuts.append(Cut(node, index, 0, layout))
        self._accept(node, range(len(node.inputs)))
        self._carry(node.outputs[0], layout)

    def _concat(self, node: ir.Node, carried: dict[int, Layout]) -> None:
        rank = _rank(node.outputs[0])
        if rank is None:
            return
        axis = node.attributes.get_int("axis", 0) % rank
        fronts = {_axis_from_front(layout, rank) for layout in carried.values()}
        if fronts != {axis}:  # joined along another axis: every input must lose the same channels
            if len(carried) == len(node.inputs) and (layout := self._same_layouts(node, list(carried.values()))):
                self._accept(node, range(len(node.inputs)))
                self._carry(node.outputs[0], layout)
            return
        segments: list[Segment] = []
        for index, value in enumerate(node.inputs):
            if index in carried and carried[index].per_channel == 1:
                segments.extend(carried[index].segments)
            elif index not in carried and value.shape is not None and isinstance(value.shape[axis], int):
                segments.append(Segment(None, value.shape[axis]))
            else:
                return
        self._accept(node, range(len(node.inputs)))
        self._carry(node.outputs[0], Layout(axis, tuple(segments)))

    def _flatten(self, node: ir.Node, layout: Layout) -> None:
        if (
            node.attributes.get_int("axis", 1) == 1
            and _axis_from_front(layout, _rank(node.inputs[0])) == 1
            and layout.per_channel == 1
        ):
            self._accept(node, [0])
            self._carry(node.outputs[0], Layout(-1, layout.segments, per_channel=None))

    def _sink_or_depthwise(self, node: ir.Node, layout: Layout) -> None:
        weight = _const(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None:
            return
        op = node.op_type
        if op in ("Conv", "ConvTranspose"):
            if _axis_from_front(layout, _rank(node.inputs[0]) or weight.ndim) != 1 or layout.per_channel != 1:
                return
            groups = node.attributes.get_int("group", 1)
            if groups == 1:
                self.result.cuts.append(Cut(node, 1, 1 if op == "Conv" else 0, layout))
            elif op == "Conv" and groups == layout.total == weight.shape[0] and weight.shape[1] == 1:
                self.result.cuts.append(Cut(node, 1, 0, layout))
                if len(node.inputs) > 2 and node.inputs[2] is not None:
                    self.result.cuts.append(Cut(node, 2, 0, layout))
                self.result.depthwise.append((node, layout))
                self._carry(node.outputs[0], layout)
            else:
                return  # grouped Conv: its groups would have to shrink evenly
            self._accept(node, [0])
            return
        if weight.ndim != 2 or (op == "Gemm" and node.attributes.get_int("transA", 0)):
            return
        rank = _rank(node.inputs[0])
        if not (layout.axis == -1 or (rank is not None and _axis_from_front(layout, rank) == rank - 1)):
            return
        axis = 1 if op == "Gemm" and node.attributes.get_int("transB", 0) else 0
        if layout.per_channel is None:
            if weight.shape[axis] % layout.total:
                return
            layout = Layout(-1, layout.segments, weight.shape[axis] // layout.total)
        elif weight.shape[axis] != layout.total * layout.per_channel:
            return
        self.result.cuts.append(Cut(node, 1, axis, layout))
        self._accept(node, [0])


def analyse(graph: ir.Graph, min_channels: int = 2) -> Analysis:
    """Trace channels through ``graph``: producers, groups that must agree, blocked groups, and the cuts."""
    return _Walk(graph, min_channels).run()


def kept_positions(layout: Layout, keep: dict[int, np.ndarray], analysis: Analysis) -> np.ndarray:
    """Indices along the layout's axis that survive, given the kept channels of each root group."""
    parts, offset = [], 0
    for segment in layout.segments:
        root = None if segment.group is None else analysis.root(segment.group)
        channels = keep.get(root) if root is not None else None
        parts.append(offset + (np.arange(segment.length) if channels is None else channels))
        offset += segment.length
    positions = np.concatenate(parts)
    per = layout.per_channel or 1
    return (positions[:, None] * per + np.arange(per)[None, :]).reshape(-1)
