"""Chain merges onnxscript's rules miss (found on MiniLM's torch export), as onnxscript rewrite rules.

Each is a ``RewriteRule(pattern, replacement, condition)`` of ``onnxscript.rewriter.pattern``: the rewriter finds
the pattern in every graph and subgraph, checks that the values the merge removes have no other reader, and
keeps the graph in order; written here is only what is matched, when, and what replaces it.

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
from onnxscript.rewriter.pattern import RewriteRule

from .steps import default_opset


def _const_ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(v) for v in tensor.numpy().reshape(-1)]


def _combined_unsqueeze_axes(inner: list[int], outer: list[int]) -> list[int]:
    """Axes of one Unsqueeze doing ``inner`` then ``outer`` (both in their own output's coordinates)."""
    outer_set = set(outer)
    free = (p for p in range(max([*inner, *outer], default=0) + len(outer) + 1) if p not in outer_set)
    positions = [next(free) for _ in range(max(inner, default=-1) + 1)]  # intermediate index -> final index
    return sorted(outer_set | {positions[i] for i in inner})


def _unsqueeze_pair(op, x, inner_axes, outer_axes):
    return op.Unsqueeze(op.Unsqueeze(x, inner_axes), outer_axes)


def _constant_non_negative_axes(context, inner_axes: ir.Value, outer_axes: ir.Value, **_) -> bool:
    a, b = _const_ints(inner_axes), _const_ints(outer_axes)
    return default_opset(context.model) >= 13 and a is not None and b is not None and min(a + b, default=0) >= 0


def _one_unsqueeze(op, x, inner_axes, outer_axes):
    axes = _combined_unsqueeze_axes(_const_ints(inner_axes), _const_ints(outer_axes))
    return op.Unsqueeze(x, op.Constant(value=ir.tensor(np.array(axes, np.int64))))


def _reshape_of_reshape(op, x, inner_shape, shape):
    return op.Reshape(op.Reshape(x, inner_shape), shape)


def _shape_of_a_tensor(context, shape: ir.Value, **_) -> bool:
    producer = shape.producer()
    shape_op = producer is not None and producer.op_type == "Shape" and producer.domain == ""
    return shape_op and default_opset(context.model) >= 14


def _reshape_allowing_zero(op, x, inner_shape, shape):
    return op.Reshape(x, shape, allowzero=1)


def _reshape(op, x, shape):
    return op.Reshape(x, shape)


def _flat_reshape_of_vector(context, x: ir.Value, shape: ir.Value) -> bool:
    return _const_ints(shape) == [-1] and x.shape is not None and len(x.shape) == 1


def _identity(op, x, shape):
    return op.Identity(x)


def _rule(name: str, pattern, replacement, condition) -> tuple[str, RewriteRule]:
    return name, RewriteRule(pattern, replacement, condition, name=name)


#: (name in the report's ``rules``, rule), applied in this order after onnxscript's own merges.
RULES = (
    _rule("unsqueeze_merge", _unsqueeze_pair, _one_unsqueeze, _constant_non_negative_axes),
    _rule("reshape_into_shape_target", _reshape_of_reshape, _reshape_allowing_zero, _shape_of_a_tensor),
    _rule("flat_reshape_of_vector", _reshape, _identity, _flat_reshape_of_vector),
)
