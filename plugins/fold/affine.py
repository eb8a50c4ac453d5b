"""Per-channel affine ops folded into the weights and bias of the Gemm / Conv / ConvTranspose before them.

Written here rather than taken from onnxscript: its Conv rule only folds into a Conv that already has a
bias (PP-OCR's squeeze-excite blocks are bias-free Conv -> Add), it has nothing for Gemm or ConvTranspose,
and it computes in float32. Here the arithmetic is done in float64 and rounded once, which keeps a folded
PP-OCRv4 detector within 1e-5 of the original.

- After the producer: Mul / Div / Add / Sub by a constant that varies only along the output-channel axis
  (a scalar, ``[C]`` for Gemm, ``[C, 1, 1]`` or ``[1, C, 1, 1]`` for Conv) scales the output channels of the
  weights and the bias: ``(W x + b) * s + t = (W s) x + (b s + t)``.
- Before a Gemm: the same ops on the K input features (``(x - mean) / std``) become
  ``x @ (diag(s) B) + t @ B``.

A folded value must have no other consumer, the constant may not raise the output's rank, and weights a
second node shares are left alone (they would be copied, not folded).

A walk rather than onnxscript ``RewriteRule`` patterns: a chain of any length (Conv -> Mul -> Add -> Div ...)
is collected first and the weights rewritten once, so the float64 result is rounded to the weights' type once;
a rule per ``Op(Conv(...), c)`` step would round at every step and need a fold round per op of the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxopt.graph import new_initializer

_ARITH = ("Add", "Sub", "Mul", "Div")


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _single_use(value: ir.Value) -> bool:
    """Read by exactly one node and not a graph output: safe to fold away."""
    return len(value.uses()) == 1 and not value.is_graph_output()


def _channel_vector(array: np.ndarray, channels: int, axis_from_end: int, rank: int) -> np.ndarray | None:
    """The constant as a [channels] vector if it only varies along the channel axis and keeps the rank."""
    if array.dtype.kind != "f" or array.ndim > rank:
        return None
    if array.size == 1:
        return np.full(channels, float(array.reshape(-1)[0]))
    shape = (1,) * (rank - array.ndim) + array.shape
    axis = rank - axis_from_end
    if shape[axis] != channels or any(d != 1 for i, d in enumerate(shape) if i != axis):
        return None
    return array.reshape(-1).astype(np.float64)


def _as_affine(node: ir.Node, through: ir.Value, vector_of) -> tuple[np.ndarray, np.ndarray] | None:
    """``node(through, const)`` as ``through * s + t`` per channel, or None if it is not that."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _ARITH or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    other, first = (b, True) if a is through else (a, False)
    array = _const(other)
    vector = None if array is None else vector_of(array)
    if vector is None:
        return None
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    if node.op_type == "Mul":
        return vector, zeros
    if node.op_type == "Add":
        return ones, vector
    if node.op_type == "Sub":
        return (ones, -vector) if first else (-ones, vector)
    if first and np.all(vector != 0):  # Div(x, c); Div(c, x) is not affine
        return 1.0 / vector, zeros
    return None


@dataclass
class _Linear:
    """A producer whose output channels are columns of a constant weight: Gemm, Conv or ConvTranspose."""

    node: ir.Node
    weight: np.ndarray  # float64, output channels on ``out_axis``
    out_axis: int  # axis of the weight holding the output channels
    bias: np.ndarray  # float64 [C] (or Gemm's [M, C])
    rank: int  # rank of the node's output
    dtype: np.dtype

    @property
    def channels(self) -> int:
        return self.weight.shape[self.out_axis]

    def vector_of(self, array: np.ndarray) -> np.ndarray | None:
        axis_from_end = 1 if self.node.op_type == "Gemm" else self.rank - 1
        return _channel_vector(array, self.channels, axis_from_end, self.rank)

    def scaled(self, scale: np.ndarray) -> np.ndarray:
        shape = [1] * self.weight.ndim
        shape[self.out_axis] = -1
        return self.weight * scale.reshape(shape)


def _linear(node: ir.Node) -> _Linear | None:
    if node.domain not in ("", "ai.onnx") or len(node.inputs) < 2 or not _single_use(node.inputs[1]):
        return None
    weight = _const(node.inputs[1])
    if weight is None or weight.dtype.kind != "f":
        return None
    bias_input = node.inputs[2] if len(node.inputs) > 2 else None
    bias = _const(bias_input) if bias_input is not None else None
    if bias_input is not None and bias is None:
        return None
    weight64 = weight.astype(np.float64)
    if node.op_type == "Gemm":
        if weight.ndim != 2 or node.attributes.get_int("transA", 0) or (bias is not None and bias.ndim > 2):
            return None
        trans_b = node.attributes.get_int("transB", 0)
        alpha = node.attributes.get_float("alpha", 1.0)
        beta = node.attributes.get_float("beta", 1.0)
        channels = weight.shape[0 if trans_b else 1]
        full_bias = (
            np.zeros(channels)
            if bias is None
            else beta * np.broadcast_to(bias.astype(np.float64), np.broadcast_shapes(bias.shape, (channels,)))
        )
        return _Linear(node, alpha * weight64, 0 if trans_b else 1, np.array(full_bias), 2, weight.dtype)
    if node.op_type == "Conv":
        return _Linear(node, weight64, 0, _conv_bias(bias, weight.shape[0]), weight.ndim, weight.dtype)
    if node.op_type == "ConvTranspose" and node.attributes.get_int("group", 1) == 1:
        return _Linear(node, weight64, 1, _conv_bias(bias, weight.shape[1]), weight.ndim, weight.dtype)
    return None


def _conv_bias(bias: np.ndarray | None, channels: int) -> np.ndarray:
    return np.zeros(channels) if bias is None else bias.astype(np.float64).reshape(-1)


def _set_weights(linear: _Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    node = linear.node
    base = node.name or node.outputs[0].name or node.op_type
    if len(node.inputs) < 3:
        node.resize_inputs(3)
    node.replace_input_with(1, new_initializer(node.graph, f"{base}_folded_weight", weight.astype(linear.dtype)))
    node.replace_input_with(2, new_initializer(node.graph, f"{base}_folded_bias", bias.astype(linear.dtype)))
    if node.op_type == "Gemm":  # alpha and beta are inside the new weight and bias now
        node.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
        node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)


def _fold_outputs(linear: _Linear) -> bool:
    scale, shift = np.ones(linear.channels), np.zeros(linear.channels)
    out = linear.node.outputs[0]
    folded = out
    while _single_use(folded):
        consumer, _ = folded.uses()[0]
        affine = _as_affine(consumer, folded, linear.vector_of)
        if affine is None:
            break
        s, t = affine
        scale, shift = scale * s, shift * s + t
        folded = consumer.outputs[0]
    if folded is out:
        return False
    bias = linear.bias * scale + shift
    _set_weights(linear, linear.scaled(scale), bias)
    # consumers of the last folded op (or the graph output) now read the producer, under the same name
    name = folded.name
    ir.convenience.replace_all_uses_with(folded, out, replace_graph_outputs=True)
    if out.is_graph_output():
        folded.name = f"{name}_unfolded"
        out.name = name
    return True


def _fold_gemm_inputs(linear: _Linear) -> bool:
    gemm = linear.node
    features = linear.weight.shape[1 - linear.out_axis]
    scale, shift = np.ones(features), np.zeros(features)
    value = gemm.inputs[0]
    while value is not None and value.producer() is not None and _single_use(value):
        node = value.producer()
        source = next((x for x in node.inputs if x is not None and _const(x) is None), None)
        if source is None or source.shape is None or len(source.shape) != 2:
            break  # only a [M, K] source keeps Gemm's input rank
        affine = _as_affine(node, source, lambda array: _channel_vector(array, features, 1, 2))
        if affine is None:
            break
        s, t = affine  # value = source * s + t
        scale, shift = s * scale, t * scale + shift
        value = source
    if value is gemm.inputs[0]:
        return False
    kn = linear.weight if linear.out_axis == 1 else linear.weight.T  # [K, N]
    folded = scale[:, None] * kn
    bias = linear.bias + shift @ kn
    gemm.replace_input_with(0, value)
    _set_weights(linear, folded if linear.out_axis == 1 else folded.T, bias)
    return True


def fold_affine_into_producers(model: ir.Model) -> int:
    """Fold per-channel affine chains into every Gemm / Conv / ConvTranspose with constant weights."""
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.graph is None or node.op_type not in ("Gemm", "Conv", "ConvTranspose"):
            continue
        linear = _linear(node)
        if linear is None:
            continue
        if node.op_type == "Gemm" and _fold_gemm_inputs(linear):
            count += 1
            linear = _linear(node)
        if linear is not None and _fold_outputs(linear):
            count += 1
    return count
