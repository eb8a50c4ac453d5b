"""The shape side of an ONNX graph, evaluated in numpy while the float side runs in torch.

Real exported graphs compute shapes at run time: ``Shape -> Gather -> Concat -> Reshape`` (attention
heads), ``Shape -> Range`` (position ids), ``Shape -> ConstantOfShape -> Equal -> Where -> Expand``
(torch.onnx's broadcasts). :mod:`.onnx_to_torch` keeps such values as small numpy arrays ("host values")
and evaluates a node here when every input it reads is one. Under ``torch.export`` a dimension is a
``SymInt``: a shape then becomes an object array of Python ints and SymInts, and numpy's object arithmetic
calls their operators, so the exporter records the dimension arithmetic instead of a constant. Nothing here
calls ``int()`` on an element for that reason (it would pin the dimension to the example's size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

Host = np.ndarray
HostOp = Callable[..., Host]


def host(values: list[Any]) -> Host:
    """A 1-D shape-like array: int64 when every element is a plain int, else an object array (SymInts)."""
    if all(isinstance(v, (int, np.integer)) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=object)


def ints(value: Any) -> list[Any]:
    """The elements of a host value (or an eager torch tensor) as Python ints / SymInts."""
    if hasattr(value, "detach"):  # a torch tensor computed at run time (eager only)
        value = value.detach().cpu().numpy()
    return [v if not isinstance(v, float) else int(v) for v in np.asarray(value).reshape(-1).tolist()]


def axes_of(axes_input: Host | None, attrs_axes: Any) -> list[int] | None:
    """Axes from the input (opset >= 13) or the attribute (older opsets)."""
    if axes_input is not None:
        return [int(a) for a in ints(axes_input)]
    return None if attrs_axes is None else [int(a) for a in attrs_axes]


def _numpy_dtype(to: int) -> Any:
    return ir.DataType(to).numpy()


def _cast(x: Host, *, to: int, saturate: int = 1, round_mode: str = "up") -> Host:
    if x.dtype == object:  # symbolic dimensions stay Python objects whatever the integer type
        return x
    return np.asarray(x).astype(_numpy_dtype(to))


def _div(a: Host, b: Host) -> Host:
    if a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return np.asarray(a // b)  # dimensions are non-negative: floor == ONNX's truncation
    return np.asarray(np.true_divide(a, b))


def _gather(x: Host, indices: Host, *, axis: int = 0) -> Host:
    return np.asarray(np.take(x, np.asarray(indices).astype(np.int64), axis=axis))


def _slice(x: Host, starts: Host, ends: Host, axes: Host | None = None, steps: Host | None = None) -> Host:
    starts_, ends_ = ints(starts), ints(ends)
    axes_ = ints(axes) if axes is not None else list(range(len(starts_)))
    steps_ = ints(steps) if steps is not None else [1] * len(starts_)
    index: list[Any] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts_, ends_, axes_, steps_):
        end = None if (step > 0 and end >= 2**62) or (step < 0 and end <= -(2**62)) else end
        index[axis % x.ndim] = slice(start, end, step)
    return np.asarray(x[tuple(index)])


def _unsqueeze(x: Host, axes_input: Host | None = None, *, axes: Any = None) -> Host:
    chosen = axes_of(axes_input, axes)
    rank = x.ndim + len(chosen)
    return np.asarray(np.expand_dims(x, tuple(sorted(a % rank for a in chosen))))


def _squeeze(x: Host, axes_input: Host | None = None, *, axes: Any = None) -> Host:
    chosen = axes_of(axes_input, axes)
    return np.asarray(np.squeeze(x) if chosen is None else np.squeeze(x, tuple(a % x.ndim for a in chosen)))


def _reshape(x: Host, shape: Host, *, allowzero: int = 0) -> Host:
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(ints(shape))]
    return np.asarray(x).reshape(dims)


def _constant_of_shape(shape: Host, *, value: Any = None) -> Host:
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(ints(shape), fill[0], dtype=fill.dtype)


def _range(start: Host, limit: Host, delta: Host) -> Host:
    return np.arange(start.reshape(()).item(), limit.reshape(()).item(), delta.reshape(()).item()).astype(start.dtype)


def _expand(x: Host, shape: Host) -> Host:
    target = np.broadcast_shapes(x.shape, tuple(ints(shape)))
    return np.array(np.broadcast_to(x, target))


#: ops that build an array of a computed size: numpy would turn a symbolic size into a constant, so with a
#: SymInt among their inputs they run in torch (torch.arange / full / expand / reshape keep it symbolic)
SIZED = {"Range": (0, 1, 2), "ConstantOfShape": (0,), "Expand": (1,), "Reshape": (1,)}  # op: its size inputs


def _binary(fn: Callable[[Any, Any], Any]) -> HostOp:
    return lambda a, b, **_: np.asarray(fn(a, b))


OPS: dict[str, HostOp] = {
    "Shape": lambda x, *, start=0, end=None: host(list(x.shape)[start:end]),
    "Size": lambda x: np.asarray(x.size, dtype=np.int64),
    "Identity": lambda x: x, "Cast": _cast, "Gather": _gather, "Slice": _slice, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Reshape": _reshape, "Expand": _expand, "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "Concat": lambda *xs, axis: np.concatenate([np.atleast_1d(x) for x in xs], axis=axis),
    "Transpose": lambda x, *, perm=None: np.transpose(x, perm),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply), "Div": _binary(_div),
    "Equal": _binary(np.equal), "Greater": _binary(np.greater), "Less": _binary(np.less),
    "GreaterOrEqual": _binary(np.greater_equal), "LessOrEqual": _binary(np.less_equal),
    "And": _binary(np.logical_and), "Or": _binary(np.logical_or), "Not": lambda x: np.asarray(np.logical_not(x)),
    "Where": lambda c, a, b: np.asarray(np.where(c, a, b)),
    "Min": lambda *xs: np.asarray(np.minimum.reduce(np.broadcast_arrays(*xs))),
    "Max": lambda *xs: np.asarray(np.maximum.reduce(np.broadcast_arrays(*xs))),
    "Neg": lambda x: np.asarray(-x), "Abs": lambda x: np.asarray(np.abs(x)),
}  # fmt: skip
