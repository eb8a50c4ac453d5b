"""Chain merges onnxscript's rules miss, written here as exact rewrites (found on MiniLM's torch export).

- ``Unsqueeze(Unsqueeze(x, a), b)`` with constant non-negative axes becomes one Unsqueeze (onnxscript's rule
  merges single-axis pairs only).
- ``Reshape(Reshape(x, s), Shape(y))`` becomes ``Reshape(x, Shape(y), allowzero=1)``: a shape read off a
  tensor holds no -1, and with ``allowzero=1`` a 0 in it means 0, which is the only meaning the original could
  have had without failing (opset 14 and later).
- ``Reshape(x, [-1])`` of a value already 1-D is the value itself.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import new_initializer

from .affine import single_use
from .steps import default_opset


def _const_ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(v) for v in tensor.numpy().reshape(-1)]


def _is_op(node: ir.Node | None, op_type: str) -> bool:
    return node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx")


def _replace(node: ir.Node, new: ir.Node) -> None:
    ir.convenience.replace_nodes_and_values(node.graph, node, [node], [new], [node.outputs[0]], [new.outputs[0]])


def _combined_unsqueeze_axes(inner: list[int], outer: list[int]) -> list[int]:
    """Axes of one Unsqueeze doing ``inner`` then ``outer`` (both in their own output's coordinates)."""
    outer_set = set(outer)
    free = (p for p in range(max([*inner, *outer], default=0) + len(outer) + 1) if p not in outer_set)
    positions = [next(free) for _ in range(max(inner, default=-1) + 1)]  # intermediate index -> final index
    return sorted(outer_set | {positions[i] for i in inner})


def merge_unsqueezes(model: ir.Model) -> int:
    if default_opset(model) < 13:  # axes are attributes before 13
        return 0
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if not _is_op(node, "Unsqueeze") or node.graph is None or len(node.inputs) < 2:
            continue
        inner = node.inputs[0].producer()
        if not _is_op(inner, "Unsqueeze") or len(inner.inputs) < 2 or not single_use(node.inputs[0]):
            continue
        a, b = _const_ints(inner.inputs[1]), _const_ints(node.inputs[1])
        if a is None or b is None or min(a + b, default=0) < 0:
            continue
        axes = new_initializer(node.graph, f"{node.name or 'unsqueeze'}_axes", np.array(_combined_unsqueeze_axes(a, b), np.int64))
        _replace(node, ir.node("Unsqueeze", inputs=[inner.inputs[0], axes]))
        count += 1
    return count


def merge_reshape_into_shape_target(model: ir.Model) -> int:
    if default_opset(model) < 14:  # allowzero arrives in 14
        return 0
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if not _is_op(node, "Reshape") or node.graph is None or len(node.inputs) < 2:
            continue
        inner = node.inputs[0].producer()
        if not _is_op(inner, "Reshape") or not single_use(node.inputs[0]) or not _is_op(node.inputs[1].producer(), "Shape"):
            continue
        _replace(node, ir.node("Reshape", inputs=[inner.inputs[0], node.inputs[1]], attributes={"allowzero": 1}))
        count += 1
    return count


def drop_flat_reshape_of_vector(model: ir.Model) -> int:
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if not _is_op(node, "Reshape") or node.graph is None or len(node.inputs) < 2:
            continue
        source = node.inputs[0]
        if _const_ints(node.inputs[1]) != [-1] or source.shape is None or len(source.shape) != 1:
            continue
        _replace(node, ir.node("Identity", inputs=[source]))
        count += 1
    return count


REWRITES = (
    ("unsqueeze_merge", merge_unsqueezes),
    ("reshape_into_shape_target", merge_reshape_into_shape_target),
    ("flat_reshape_of_vector", drop_flat_reshape_of_vector),
)
