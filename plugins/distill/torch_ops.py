"""ONNX operators as torch functions, for :mod:`.onnx_to_torch` (written here: see its docstring for why).

Each entry takes the node's inputs positionally and its attributes as keywords, with the ONNX defaults.
Inputs listed in ``STATIC_INPUTS`` (shapes, axes, pads, scales, ...) arrive as host values (numpy, see
:mod:`.shape_ops`) and are read as Python numbers; every other input is a torch tensor. Semantics follow
the ONNX operator specification; where torch has no exact equivalent (Resize modes, LSTM options) the op
raises :class:`UnsupportedOp` naming what is missing rather than computing something close.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from .shape_ops import axes_of, ints

Op = Callable[..., Any]


class UnsupportedOp(ValueError):
    """The student graph uses an op (or an op's option) this converter cannot train."""


def _pads(pads: list[int] | None, rank: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> torch F.pad order (last axis first: b_last, e_last, ...)."""
    pads = pads or [0] * (2 * rank)
    out: list[int] = []
    for axis in reversed(range(rank)):
        out += [pads[axis], pads[axis + rank]]
    return out


def _symmetric_pads(pads: list[int] | None, rank: int) -> tuple[list[int] | None, list[int]]:
    """(pads for F.pad when they are asymmetric, else None; the symmetric per-axis padding for the op)."""
    pads = pads or [0] * (2 * rank)
    if pads[:rank] == pads[rank:]:
        return None, pads[:rank]
    return _pads(pads, rank), [0] * rank


def _check_auto_pad(auto_pad: str, op: str) -> None:
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedOp(f"{op} with auto_pad={auto_pad} (export the student with explicit pads)")


def _conv(x, w, b=None, *, group=1, pads=None, strides=None, dilations=None, auto_pad="NOTSET", kernel_shape=None):
    _check_auto_pad(auto_pad, "Conv")
    rank = w.dim() - 2
    extra, padding = _symmetric_pads(pads, rank)
    if extra is not None:
        x = F.pad(x, extra)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(x, w, b, stride=strides or 1, padding=padding, dilation=dilations or 1, groups=group)


def _conv_transpose(x, w, b=None, *, group=1, pads=None, strides=None, dilations=None, auto_pad="NOTSET",
                    kernel_shape=None, output_padding=None, output_shape=None):  # fmt: skip
    _check_auto_pad(auto_pad, "ConvTranspose")
    if output_shape:
        raise UnsupportedOp("ConvTranspose with output_shape (export the student with explicit pads)")
    rank = w.dim() - 2
    pads = list(pads or [0] * (2 * rank))
    begin, end = pads[:rank], pads[rank:]
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    symmetric = [min(a, e) for a, e in zip(begin, end)]
    y = conv(x, w, b, stride=strides or 1, padding=symmetric, output_padding=output_padding or 0, groups=group,
             dilation=dilations or 1)  # fmt: skip
    crop = [(a - s, e - s) for a, e, s in zip(begin, end, symmetric)]
    if any(a or e for a, e in crop):
        y = y[(slice(None), slice(None), *(slice(a, y.shape[2 + i] - e) for i, (a, e) in enumerate(crop)))]
    return y


def _pool(kind: str) -> Op:
    def pool(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, auto_pad="NOTSET", dilations=None,
             count_include_pad=0, storage_order=0):  # fmt: skip
        _check_auto_pad(auto_pad, f"{kind}Pool")
        rank = len(kernel_shape)
        extra, padding = _symmetric_pads(pads, rank)
        if extra is not None:
            x = F.pad(x, extra, value=-math.inf if kind == "Max" else 0.0)
        strides = strides or [1] * rank
        if kind == "Max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            return fn(x, kernel_shape, strides, padding, dilations or 1, ceil_mode=bool(ceil_mode))
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        return fn(
            x, kernel_shape, strides, padding, ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad)
        )

    return pool


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.t() if transA else a
    b = b.t() if transB else b
    y = alpha * (a @ b) if alpha != 1.0 else a @ b
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


def batch_norm(training: bool, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    # ONNX momentum weighs the old statistic, torch's weighs the new one
    return F.batch_norm(x, mean, var, scale, bias, training=training, momentum=1.0 - momentum, eps=epsilon)


def _layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = axis % x.dim()
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, eps=epsilon)


def _reshape(x, shape, *, allowzero=0):
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(ints(shape))]
    return x.reshape(dims)


def _flatten(x, *, axis=1):
    axis = axis + x.dim() if axis < 0 else axis  # axis == rank is allowed: [prod, 1]
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _unsqueeze(x, axes_input=None, *, axes=None):
    chosen = axes_of(axes_input, axes)
    for axis in sorted(a % (x.dim() + len(chosen)) for a in chosen):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x, axes_input=None, *, axes=None):
    chosen = axes_of(axes_input, axes)
    if chosen is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in chosen), reverse=True):
        x = x.squeeze(axis)
    return x


def _reduce(fn: Callable[..., Any]) -> Op:
    def reduce(x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        chosen = axes_of(axes_input, axes)
        if not chosen:
            if noop_with_empty_axes:
                return x
            chosen = list(range(x.dim()))
        return fn(x, dim=[a % x.dim() for a in chosen], keepdim=bool(keepdims))

    return reduce


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts), ints(ends)
    axes = ints(axes) if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis % x.dim()
        if step < 0:  # torch slices forward only; a reversal of the whole axis is a flip
            if step != -1 or not (start == -1 or start >= 2**62) or end > -(2**62):
                raise UnsupportedOp("Slice with a negative step other than reversing the whole axis")
            flips.append(axis)
            continue
        index[axis] = slice(start, None if end >= 2**62 else end, step)
    if flips:
        x = x.flip(flips)
    return x[tuple(index)]


def _softmax(fn: Callable[..., Any]) -> Op:
    def softmax(x, *, axis=-1, coerce=False):
        axis = axis % x.dim()
        if coerce and axis != x.dim() - 1:  # opset < 13: softmax over the input flattened from axis on
            return fn(x.reshape(*x.shape[:axis], -1), dim=-1).reshape(x.shape)
        return fn(x, dim=axis)

    return softmax


def _clip(x, low=None, high=None, *, min=None, max=None):  # noqa: A002 - ONNX attribute names (opset < 11)
    low = min if low is None else float(np.asarray(low).reshape(-1)[0]) if not torch.is_tensor(low) else float(low)
    high = max if high is None else float(np.asarray(high).reshape(-1)[0]) if not torch.is_tensor(high) else float(high)
    return torch.clamp(x, low, high)


_FLOAT = (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)
_TORCH_DTYPES = {
    ir.DataType.INT64: torch.int64,
    ir.DataType.INT32: torch.int32,
    ir.DataType.BOOL: torch.bool,
    ir.DataType.INT8: torch.int8,
    ir.DataType.UINT8: torch.uint8,
    ir.DataType.INT16: torch.int16,
}


def _cast(x, *, to, saturate=1, round_mode="up"):
    dtype = ir.DataType(to)
    if dtype in _FLOAT:
        return x.float()  # a student trains in float32 whatever the teacher's float type
    if dtype not in _TORCH_DTYPES:
        raise UnsupportedOp(f"Cast to {dtype.name}")
    return x.to(_TORCH_DTYPES[dtype])


def _gather(x, indices, *, axis=0):
    axis = axis % x.dim()
    index = torch.as_tensor(indices).long()
    index = torch.where(index < 0, index + x.shape[axis], index)
    flat = torch.index_select(x, axis, index.reshape(-1))
    return flat.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


def _expand(x, shape):
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


def _where(condition, a, b):
    return torch.where(condition.bool(), a, b)


def _range(start, limit, delta):
    values = [v.item() if torch.is_tensor(v) else np.asarray(v).reshape(()).item() for v in (start, limit, delta)]
    dtype = start.dtype if torch.is_tensor(start) else torch.from_numpy(np.asarray(start)).dtype
    return torch.arange(*values, dtype=dtype)


def _constant_of_shape(shape, *, value=None):
    fill = torch.zeros(1) if value is None else torch.from_numpy(np.asarray(value).reshape(-1).copy())
    return torch.full(ints(shape), fill[0].item(), dtype=fill.dtype if fill.dtype != torch.float64 else torch.float32)


def _split(x, split=None, *, axis=0, num_outputs=None):
    axis = axis % x.dim()
    if split is not None:
        return torch.split(x, [int(s) for s in ints(split)], dim=axis)
    count = num_outputs
    size = x.shape[axis]
    return torch.split(x, -(-size // count), dim=axis)


def _pad(x, pads=None, constant_value=None, axes=None, *, mode="constant", value=0.0):
    pads_ = [int(p) for p in ints(pads)]
    rank = x.dim()
    if axes is not None:  # opset 18: pads for the listed axes only
        chosen = [int(a) % rank for a in ints(axes)]
        full = [0] * (2 * rank)
        for i, axis in enumerate(chosen):
            full[axis], full[axis + rank] = pads_[i], pads_[i + len(chosen)]
        pads_ = full
    if constant_value is not None:
        value = (
            float(np.asarray(constant_value).reshape(-1)[0])
            if not torch.is_tensor(constant_value)
            else float(constant_value)
        )
    torch_pads = _pads(pads_, rank)
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # reflect / replicate pad only the trailing axes
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    modes = {"reflect": "reflect", "edge": "replicate"}
    if mode not in modes:
        raise UnsupportedOp(f"Pad with mode={mode}")
    return F.pad(x, torch_pads, mode=modes[mode])


_RESIZE = {
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("linear", "half_pixel", None): ("linear", False), ("linear", "pytorch_half_pixel", None): ("linear", False),
    ("linear", "align_corners", None): ("linear", True),
    ("cubic", "half_pixel", None): ("cubic", False), ("cubic", "align_corners", None): ("cubic", True),
}  # fmt: skip
_INTERPOLATE = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear", ("cubic", 2): "bicubic"}


def _resize(x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
            nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0,
            antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):  # fmt: skip
    key = (mode, coordinate_transformation_mode, nearest_mode if mode == "nearest" else None)
    if key not in _RESIZE or antialias or exclude_outside or axes or (mode == "cubic" and cubic_coeff_a != -0.75):
        raise UnsupportedOp(f"Resize with mode={mode}, coordinate_transformation_mode={coordinate_transformation_mode}")
    kind, align = _RESIZE[key]
    spatial = x.dim() - 2
    torch_mode = "nearest" if kind == "nearest" else _INTERPOLATE.get((kind, spatial))
    if torch_mode is None:
        raise UnsupportedOp(f"Resize {mode} of a rank-{x.dim()} tensor")
    size_list = ints(sizes) if sizes is not None and np.asarray(sizes).size else None
    if size_list is not None:
        return F.interpolate(x, size=size_list[2:], mode=torch_mode, align_corners=align)
    factors = [float(s) for s in np.asarray(scales, dtype=np.float64).reshape(-1)]
    if factors[:2] != [1.0, 1.0]:
        raise UnsupportedOp("Resize of the batch or channel axis")
    return F.interpolate(
        x, scale_factor=factors[2:], mode=torch_mode, align_corners=align, recompute_scale_factor=False
    )


def _lstm(
    x,
    w,
    r,
    b=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    p=None,
    *,
    hidden_size,
    direction="forward",
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    input_forget=0,
    layout=0,
):
    if p is not None or clip is not None or input_forget or layout or sequence_lens is not None:
        raise UnsupportedOp("LSTM with peepholes, clip, input_forget, layout=1 or sequence_lens")
    if activations and [a.lower() for a in activations] != ["sigmoid", "tanh", "tanh"] * len(activations) // 3:
        raise UnsupportedOp(f"LSTM with activations {activations}")
    h = hidden_size
    directions = w.shape[0]
    batch = x.shape[1]
    if b is None:
        b = x.new_zeros(directions, 8 * h)
    if initial_h is None:
        initial_h = x.new_zeros(directions, batch, h)
    if initial_c is None:
        initial_c = x.new_zeros(directions, batch, h)

    def torch_order(t):  # ONNX gates i, o, f, c -> torch's i, f, c (g), o
        i, o, f, c = t.split(h, dim=0)
        return torch.cat([i, f, c, o], dim=0)

    params = []
    for d in range(directions):
        params += [torch_order(w[d]), torch_order(r[d]), torch_order(b[d, : 4 * h]), torch_order(b[d, 4 * h :])]
    reverse = direction == "reverse"
    inputs = x.flip(0) if reverse else x
    y, y_h, y_c = torch.lstm(inputs, (initial_h, initial_c), params, True, 1, 0.0, False, directions == 2, False)
    if reverse:
        y = y.flip(0)
    return y.reshape(y.shape[0], batch, directions, h).permute(0, 2, 1, 3), y_h, y_c


def _hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        return F.hardsigmoid(x)  # exported as one HardSigmoid node again, not Mul + Add + Clip
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _no_attributes(fn: Op) -> Op:
    """A torch function that takes only tensors, for an ONNX op whose attributes change nothing here."""
    return lambda *args, **_: fn(*args)


def _variadic(fn: Op) -> Op:
    def apply(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return apply


OPS: dict[str, Op] = {
    "Add": _no_attributes(torch.add),
    "Sub": _no_attributes(torch.sub),
    "Mul": _no_attributes(torch.mul),
    "Div": _no_attributes(torch.div),
    "Pow": _no_attributes(torch.pow),
    "MatMul": _no_attributes(torch.matmul),
    "Sqrt": _no_attributes(torch.sqrt),
    "Exp": _no_attributes(torch.exp),
    "Log": _no_attributes(torch.log),
    "Neg": _no_attributes(torch.neg),
    "Abs": _no_attributes(torch.abs),
    "Erf": _no_attributes(torch.erf),
    "Reciprocal": _no_attributes(torch.reciprocal),
    "Floor": _no_attributes(torch.floor),
    "Ceil": _no_attributes(torch.ceil),
    "Relu": _no_attributes(F.relu),
    "Sigmoid": _no_attributes(torch.sigmoid),
    "Tanh": _no_attributes(torch.tanh),
    "HardSwish": _no_attributes(F.hardswish),
    "Softplus": _no_attributes(F.softplus),
    "PRelu": _no_attributes(F.prelu),
    "Identity": _no_attributes(lambda x: x),
    "Dropout": lambda x, *_, **__: x,
    "LeakyRelu": lambda x, *, alpha=0.01: F.leaky_relu(x, alpha),
    "Gelu": lambda x, *, approximate="none": F.gelu(x, approximate=approximate),
    "HardSigmoid": _hard_sigmoid,
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    "Clip": _clip,
    "Cast": _cast,
    "Gemm": _gemm,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "LayerNormalization": _layer_norm,
    "MaxPool": _pool("Max"),
    "AveragePool": _pool("Average"),
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda x, *, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Split": _split,
    "Pad": _pad,
    "Resize": _resize,
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "Gather": _gather,
    "Expand": _expand,
    "Where": _where,
    "Tile": lambda x, repeats: x.repeat(*[int(r) for r in ints(repeats)]),
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "LSTM": _lstm,
    "Shape": lambda x, *, start=0, end=None: list(x.shape)[start:end],  # turned into a host value by the module
    "Size": lambda x: x.numel(),
    "Equal": _no_attributes(torch.eq),
    "Greater": _no_attributes(torch.gt),
    "Less": _no_attributes(torch.lt),
    "GreaterOrEqual": _no_attributes(torch.ge),
    "LessOrEqual": _no_attributes(torch.le),
    "And": _no_attributes(torch.logical_and),
    "Or": _no_attributes(torch.logical_or),
    "Not": _no_attributes(torch.logical_not),
    "Min": _variadic(torch.minimum),
    "Max": _variadic(torch.maximum),
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax),
    "ReduceMin": _reduce(torch.amin),
    "ReduceL2": _reduce(lambda x, dim, keepdim: torch.sqrt(torch.sum(x * x, dim=dim, keepdim=keepdim))),
}

#: Inputs read as static Python values (host values), never as tensors: (op, input index).
STATIC_INPUTS = {("Reshape", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3),
                 ("Slice", 4), ("ReduceMean", 1), ("ReduceSum", 1), ("ReduceMax", 1), ("ReduceMin", 1), ("ReduceL2", 1),
                 ("Clip", 1), ("Clip", 2), ("Expand", 1), ("Tile", 1), ("Split", 1), ("Pad", 1), ("Pad", 2), ("Pad", 3),
                 ("Resize", 1), ("Resize", 2), ("Resize", 3), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1),
                 ("Range", 2)}  # fmt: skip

#: the float unary ops the pinned torch (2.13.0, x86, MKL) hands to MKL VML (``vmsErf`` ...), probed one by one: the
#: ones OPS uses (Erf, Exp, Log, Sqrt, Tanh, ReduceL2's sqrt) and their backward's (exp), and the rest for ops to come.
_VML_OPS = (torch.erf, torch.erfc, torch.exp, torch.log, torch.log2, torch.log10, torch.sqrt, torch.tanh,
            torch.sin, torch.cos, torch.tan, torch.asin, torch.acos, torch.atan, torch.trunc)  # fmt: skip


def resolve_vml_dispatch() -> None:
    """Call each MKL VML-backed op once on one element, on this thread alone, so MKL resolves its kernels now.

    oneMKL 2024.2 (the one the torch wheels bundle) resolves each VML function's kernel lazily, on its first call,
    per precision. When that first call runs on several intra-op threads at once (a fresh process's first Erf on a
    sizable tensor), one thread can compute its whole chunk with the low-accuracy EP kernel though ATen asks for
    VML_HA: erf off by up to 2.4e-4 and saturating to +-1 from |x| ~ 2.6, bit for bit what ``vmsErf(..., VML_EP)``
    returns. Only that call is wrong, later ones are exact (pytorch/pytorch#188792). It made tiny_transformer's
    converted student differ from onnxruntime by 1e-3 in ~7 % of processes. One element stays below ATen's parallel
    grain, so these calls run here one at a time and every later call finds its kernel resolved. Idempotent, well
    under a millisecond; without MKL it just computes a few values.
    """
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            one = torch.full((1,), 0.5, dtype=dtype)
            for op in _VML_OPS:
                op(one)


resolve_vml_dispatch()  # at import: before any module built from these ops runs
