"""An ONNX graph as a trainable ``torch.nn.Module``: how an ONNX student (a pruned teacher, a user's file) trains.

Written here, not taken from onnx2torch: onnx2torch 1.5.15 imports torchvision at import time (for NMS
and RoiAlign), and torchvision is not installed next to the pinned torch. The module interprets the graph
node by node with torch functions, which ``torch.onnx.export`` traces back into a plain graph.

- Float initializers become ``nn.Parameter`` s, except BatchNormalization's running statistics (buffers,
  updated in training mode as torch's BatchNorm does) and the subtrahend / divisor of Sub / Div (input
  standardization, kept fixed). Constant nodes, integer initializers and whatever is computed from them
  alone are folded at construction into static values, so shape inputs (Reshape, Slice, Unsqueeze
  axes, ...) are plain Python ints the exporter sees as constants.
- Dropout is the identity (a student is trained without it); everything runs in float32.
- Ops a student uses are covered (see ``OPS``); any other op is a clear error naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

Static = np.ndarray  # a value known at construction time
Op = Callable[..., Any]


class UnsupportedOp(ValueError):
    """The student graph uses an op this converter cannot train."""


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


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


def _check_auto_pad(attrs: dict[str, Any], op: str) -> None:
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOp(f"{op} with auto_pad={attrs['auto_pad']} (export the student with explicit pads)")


def _conv(x, w, b=None, *, group=1, pads=None, strides=None, dilations=None, auto_pad="NOTSET", kernel_shape=None):
    _check_auto_pad({"auto_pad": auto_pad}, "Conv")
    rank = w.dim() - 2
    extra, padding = _symmetric_pads(pads, rank)
    if extra is not None:
        x = F.pad(x, extra)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(x, w, b, stride=strides or 1, padding=padding, dilation=dilations or 1, groups=group)


def _pool(kind: str) -> Op:
    def pool(x, *, kernel_shape, strides=None, pads=None, ceil_mode=0, auto_pad="NOTSET", dilations=None,
             count_include_pad=0, storage_order=0):  # fmt: skip
        _check_auto_pad({"auto_pad": auto_pad}, f"{kind}Pool")
        rank = len(kernel_shape)
        extra, padding = _symmetric_pads(pads, rank)
        if extra is not None:
            x = F.pad(x, extra, value=-math.inf if kind == "Max" else 0.0)
        strides = strides or [1] * rank
        if kind == "Max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]
            return fn(x, kernel_shape, strides, padding, dilations or 1, ceil_mode=bool(ceil_mode))
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        return fn(x, kernel_shape, strides, padding, ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))

    return pool


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.t() if transA else a
    b = b.t() if transB else b
    y = alpha * (a @ b) if alpha != 1.0 else a @ b
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


def _batch_norm(module: OnnxModule, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    # ONNX momentum weighs the old statistic, torch's weighs the new one
    return F.batch_norm(x, mean, var, scale, bias, training=module.training, momentum=1.0 - momentum, eps=epsilon)


def _layer_norm(x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    axis = axis % x.dim()
    return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, eps=epsilon)


def _reshape(x, shape, *, allowzero=0):
    dims = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(_ints(shape))]
    return x.reshape(dims)


def _flatten(x, *, axis=1):
    axis = axis % x.dim() if x.dim() else 0
    return x.reshape(math.prod(x.shape[:axis]), -1) if axis else x.reshape(1, -1)


def _axes(axes_input, attrs_axes):
    return _ints(axes_input) if axes_input is not None else (list(attrs_axes) if attrs_axes is not None else None)


def _unsqueeze(x, axes_input=None, *, axes=None):
    for axis in sorted(a % (x.dim() + len(_axes(axes_input, axes))) for a in _axes(axes_input, axes)):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x, axes_input=None, *, axes=None):
    chosen = _axes(axes_input, axes)
    if chosen is None:
        return x.squeeze()
    for axis in sorted((a % x.dim() for a in chosen), reverse=True):
        x = x.squeeze(axis)
    return x


def _reduce(fn: Callable[..., Any]) -> Op:
    def reduce(x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        chosen = _axes(axes_input, axes)
        if not chosen:
            if noop_with_empty_axes:
                return x
            chosen = list(range(x.dim()))
        return fn(x, dim=[a % x.dim() for a in chosen], keepdim=bool(keepdims))

    return reduce


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step != 1:
            raise UnsupportedOp("Slice with a step other than 1")
        index[axis % x.dim()] = slice(start, None if end >= 2**62 else end)
    return x[tuple(index)]


def _softmax(fn: Callable[..., Any]) -> Op:
    return lambda x, *, axis=-1: fn(x, dim=axis)


def _clip(x, low=None, high=None, *, min=None, max=None):  # noqa: A002 - ONNX attribute names (opset < 11)
    low = min if low is None else low
    high = max if high is None else high
    return torch.clamp(x, None if low is None else float(np.asarray(low)), None if high is None else float(np.asarray(high)))


def _cast(x, *, to, saturate=1, round_mode="up"):
    dtype = ir.DataType(to)
    if not dtype.is_floating_point():
        raise UnsupportedOp(f"Cast to {dtype.name} in the trained part of the graph")
    return x.float()


def _no_attributes(fn: Op) -> Op:
    """A torch function that takes only tensors, for an ONNX op whose attributes change nothing here."""
    return lambda *args, **_: fn(*args)


OPS: dict[str, Op] = {
    "Add": _no_attributes(torch.add), "Sub": _no_attributes(torch.sub), "Mul": _no_attributes(torch.mul),
    "Div": _no_attributes(torch.div), "Pow": _no_attributes(torch.pow), "MatMul": _no_attributes(torch.matmul),
    "Sqrt": _no_attributes(torch.sqrt), "Exp": _no_attributes(torch.exp), "Log": _no_attributes(torch.log),
    "Neg": _no_attributes(torch.neg), "Abs": _no_attributes(torch.abs), "Erf": _no_attributes(torch.erf),
    "Relu": _no_attributes(F.relu), "Sigmoid": _no_attributes(torch.sigmoid), "Tanh": _no_attributes(torch.tanh),
    "Identity": _no_attributes(lambda x: x), "Dropout": lambda x, *_, **__: x,
    "LeakyRelu": lambda x, *, alpha=0.01: F.leaky_relu(x, alpha),
    "Gelu": lambda x, *, approximate="none": F.gelu(x, approximate=approximate),
    "HardSigmoid": lambda x, *, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0.0, 1.0),
    "Softmax": _softmax(F.softmax), "LogSoftmax": _softmax(F.log_softmax), "Clip": _clip, "Cast": _cast,
    "Gemm": _gemm, "Conv": _conv, "LayerNormalization": _layer_norm,
    "MaxPool": _pool("Max"), "AveragePool": _pool("Average"),
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": lambda x, *, perm=None: x.permute(*(perm or reversed(range(x.dim())))),
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Slice": _slice,
    "Concat": lambda *xs, axis: torch.cat(xs, dim=axis),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum), "ReduceMax": _reduce(torch.amax),
}  # fmt: skip

#: Inputs read as static Python values, never as tensors: (op, input index).
STATIC_INPUTS = {("Reshape", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4),
                 ("ReduceMean", 1), ("ReduceSum", 1), ("ReduceMax", 1), ("Clip", 1), ("Clip", 2)}  # fmt: skip
_BN_STATS = (3, 4)  # BatchNormalization's mean and var inputs


def _attributes(node: ir.Node) -> dict[str, Any]:
    out = {}
    for name, attr in node.attributes.items():
        value = attr.value
        if attr.type == ir.AttributeType.TENSOR:
            value = value.numpy()
        elif isinstance(value, (list, tuple)):
            value = list(value)
        out[name] = value
    return out


def _attribute_name(name: str, index: int) -> str:
    """The ONNX name as a torch attribute name (no dots), numbered so two names never collide; it reappears in
    the exported student's initializer names."""
    return f"{re.sub(r'[^0-9A-Za-z_]', '_', name)[:48]}_{index}"


def _fixed_float(value: ir.Value) -> bool:
    """An initializer that stays fixed: BN running statistics, Sub's subtrahend, Div's divisor."""
    uses = list(value.uses())
    return bool(uses) and all(
        (u.node.op_type == "BatchNormalization" and u.idx in _BN_STATS) or (u.node.op_type in ("Sub", "Div") and u.idx == 1)
        for u in uses
    )


class OnnxModule(torch.nn.Module):
    """``forward(*inputs)`` returns the graph's outputs as a tuple, computed by torch ops on trainable weights."""

    def __init__(self, model: ir.Model) -> None:
        super().__init__()
        graph = model.graph
        self.input_names = [v.name for v in graph.inputs if v.name not in graph.initializers]
        self.output_names = [v.name for v in graph.outputs]
        self.weights = torch.nn.ParameterDict()
        self._tensor_keys: dict[str, str] = {}  # value name -> parameter or buffer key
        self._statics: dict[str, Static] = {}  # static inputs of the steps below
        static: dict[str, Static] = {}
        for name, value in graph.initializers.items():
            array = value.const_value.numpy()
            key = _attribute_name(name, len(self._tensor_keys))
            if array.dtype.kind != "f":
                static[name] = array
                continue
            tensor = torch.from_numpy(np.array(array, dtype=np.float32))
            if _fixed_float(value):
                self.register_buffer(key, tensor)
            else:
                self.weights[key] = torch.nn.Parameter(tensor)
            self._tensor_keys[name] = key
        self._steps: list[tuple[Op, list[tuple[str, str | None]], dict[str, Any], list[str], str]] = []
        for node in graph:  # onnx_ir keeps nodes in topological order
            self._add(node, static)
        missing = [name for name in self.output_names if name in static]
        if missing:
            raise UnsupportedOp(f"output(s) {', '.join(missing)} are constants; nothing to train")

    def _add(self, node: ir.Node, static: dict[str, Static]) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOp(f"op {node.domain}::{node.op_type} (node {node.name!r})")
        attrs = _attributes(node)
        if node.op_type == "Constant":
            static[node.outputs[0].name] = np.asarray(attrs.get("value", next(iter(attrs.values()), None)))
            return
        fn = _bound_batch_norm(self) if node.op_type == "BatchNormalization" else OPS.get(node.op_type)
        if fn is None:
            supported = ", ".join(sorted([*OPS, "BatchNormalization", "Constant"]))
            raise UnsupportedOp(f"op {node.op_type} (node {node.name!r}); supported: {supported}")
        inputs: list[tuple[str, str | None]] = []
        for index, value in enumerate(node.inputs):
            if value is None:
                inputs.append(("none", None))
            elif value.name in static and ((node.op_type, index) in STATIC_INPUTS or value.name not in self._tensor_keys):
                inputs.append(("static", value.name))
            else:
                inputs.append(("tensor", value.name))
        outputs = [v.name for v in node.outputs]
        if all(kind != "tensor" for kind, _ in inputs) and node.op_type != "BatchNormalization":
            args = [_static_arg(node.op_type, i, static[name]) if kind == "static" else None for i, (kind, name) in enumerate(inputs)]
            result = fn(*args, **attrs)
            static[outputs[0]] = result.numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
            return
        self._steps.append((fn, inputs, attrs, outputs, node.op_type))
        for kind, name in inputs:
            if kind == "static":
                self._statics[name] = static[name]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(zip(self.input_names, inputs))
        params = dict(self.weights.items())
        for name, key in self._tensor_keys.items():
            env[name] = params[key] if key in params else getattr(self, key)
        for fn, inputs_spec, attrs, outputs, op_type in self._steps:
            args = []
            for index, (kind, name) in enumerate(inputs_spec):
                if kind == "none":
                    args.append(None)
                elif kind == "static":
                    args.append(_static_arg(op_type, index, self._statics[name]))
                else:
                    args.append(env[name])
            result = fn(*args, **attrs)
            env[outputs[0]] = result
        return tuple(env[name] for name in self.output_names)


def _static_arg(op_type: str, index: int, array: Static) -> Any:
    """A static value as the op reads it: a Python list for shape-like inputs, a float32 tensor otherwise."""
    if (op_type, index) in STATIC_INPUTS:
        return array
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype))


def _bound_batch_norm(module: OnnxModule) -> Op:
    def batch_norm(*args, **attrs):
        return _batch_norm(module, *args, **attrs)

    return batch_norm
