"""Per-feature affine ops folded into a Gemm's weights and bias — written here; onnxscript only does it for Conv.

Before the Gemm, a chain of Add / Sub / Mul / Div by constants acting on the K features (input
standardization, ``(x - mean) / std``) becomes ``x @ (diag(s) B) + (t @ B)``. After it, Mul / Div / Add /
Sub by constants acting on the N outputs fold into B's columns and the bias. Only constants that
broadcast along the feature axis without raising the rank qualify, every folded value must have no other
consumer, and Gemm is normalised to ``beta = 1`` on the way.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_ARITH = ("Add", "Sub", "Mul", "Div")


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else tensor.numpy()


def _feature_vector(array: np.ndarray, features: int) -> np.ndarray | None:
    """The constant as a [features] vector if it only varies along the last axis (shape [], [F], [1, F])."""
    if array.ndim > 2 or (array.ndim == 2 and array.shape[0] != 1) or array.dtype.kind != "f":
        return None
    flat = array.reshape(-1)
    if flat.size == 1:
        return np.full(features, flat[0], dtype=np.float64)
    return flat.astype(np.float64) if flat.size == features else None


def _as_affine(node: ir.Node, through: ir.Value, features: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``node(through, const)`` as ``through * s + t`` per feature, or None if it is not that."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _ARITH or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    other, first = (b, True) if a is through else (a, False)
    array = _const(other)
    vector = None if array is None else _feature_vector(array, features)
    if vector is None:
        return None
    ones, zeros = np.ones(features), np.zeros(features)
    if node.op_type == "Mul":
        return vector, zeros
    if node.op_type == "Add":
        return ones, vector
    if node.op_type == "Sub":
        return (ones, -vector) if first else (-ones, vector)
    if first and np.all(vector != 0):  # Div(x, c)
        return 1.0 / vector, zeros
    return None


def _single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _gemm_parts(gemm: ir.Node) -> tuple[np.ndarray, np.ndarray, float, bool] | None:
    """B as [K, N], the bias as [N] or [M, N] times beta, alpha, and whether B was transposed."""
    if gemm.attributes.get_int("transA", 0) or not _single_use(gemm.inputs[1]):
        return None  # a weight another node shares would be duplicated, not folded
    weights = _const(gemm.inputs[1])
    if weights is None or weights.ndim != 2 or weights.dtype.kind != "f":
        return None
    trans_b = bool(gemm.attributes.get_int("transB", 0))
    b = weights.T if trans_b else weights
    alpha = gemm.attributes.get_float("alpha", 1.0)
    beta = gemm.attributes.get_float("beta", 1.0)
    bias_value = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if bias_value is None:
        bias = np.zeros(b.shape[1])
    else:
        bias_array = _const(bias_value)
        if bias_array is None or bias_array.ndim > 2:
            return None
        bias = beta * bias_array.astype(np.float64)
    return b.astype(np.float64), np.broadcast_to(bias, np.broadcast_shapes(bias.shape, (b.shape[1],))).copy(), alpha, trans_b


def _new_initializer(graph: ir.Graph, base: str, array: np.ndarray) -> ir.Value:
    name, suffix = base, 1
    while name in graph.initializers:
        name, suffix = f"{base}_{suffix}", suffix + 1
    value = ir.Value(name=name, const_value=ir.tensor(array))
    value.type, value.shape = ir.TensorType(ir.DataType.from_numpy(array.dtype)), ir.Shape(array.shape)
    graph.register_initializer(value)
    return value


def _rewrite(gemm: ir.Node, a_input: ir.Value, b: np.ndarray, bias: np.ndarray, trans_b: bool, dtype: np.dtype) -> None:
    base = gemm.name or gemm.outputs[0].name or "gemm"
    weights = _new_initializer(gemm.graph, f"{base}_folded_weight", (b.T if trans_b else b).astype(dtype))
    bias_value = _new_initializer(gemm.graph, f"{base}_folded_bias", bias.astype(dtype))
    if len(gemm.inputs) < 3:
        gemm.resize_inputs(3)
    gemm.replace_input_with(0, a_input)
    gemm.replace_input_with(1, weights)
    gemm.replace_input_with(2, bias_value)
    gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)


def _fold_inputs(gemm: ir.Node) -> bool:
    parts = _gemm_parts(gemm)
    if parts is None:
        return False
    b, bias, alpha, trans_b = parts
    features = b.shape[0]
    scale, shift = np.ones(features), np.zeros(features)
    value = gemm.inputs[0]
    while value is not None and value.producer() is not None and _single_use(value):
        node = value.producer()
        source = next((x for x in node.inputs if x is not None and _const(x) is None), None)
        if source is None or source.shape is None or len(source.shape) != 2:
            break  # only a [M, K] source keeps Gemm's input rank
        affine = _as_affine(node, source, features)
        if affine is None:
            break
        s, t = affine  # value = source * s + t, and value feeds the chain folded so far
        scale, shift = s * scale, t * scale + shift
        value = source
    if value is gemm.inputs[0]:
        return False
    dtype = _const(gemm.inputs[1]).dtype
    _rewrite(gemm, value, scale[:, None] * b, bias + alpha * (shift @ b), trans_b, dtype)
    return True


def _fold_outputs(gemm: ir.Node) -> bool:
    parts = _gemm_parts(gemm)
    if parts is None:
        return False
    b, bias, alpha, trans_b = parts
    features = b.shape[1]
    b = alpha * b
    out = gemm.outputs[0]
    last = None
    while _single_use(out):
        node, _ = out.uses()[0]
        affine = _as_affine(node, out, features)
        if affine is None:
            break
        s, t = affine
        b, bias = b * s, bias * s + t
        out, last = node.outputs[0], node
    if last is None:
        return False
    dtype = _const(gemm.inputs[1]).dtype
    gemm.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
    _rewrite(gemm, gemm.inputs[0], b, bias, trans_b, dtype)
    # the last folded op's consumers (or the graph output) now read the Gemm directly, under the same name
    name = out.name
    ir.convenience.replace_all_uses_with(out, gemm.outputs[0], replace_graph_outputs=True)
    if any(o is gemm.outputs[0] for o in gemm.graph.outputs):
        out.name = f"{name}_unfolded"
        gemm.outputs[0].name = name
    return True


def fold_affine_into_gemm(model: ir.Model) -> int:
    """Fold per-feature affine chains before and after every Gemm with constant weights; return how many."""
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.op_type == "Gemm" and node.domain in ("", "ai.onnx") and node.graph is not None:
            count += _fold_inputs(node) + _fold_outputs(node)
    return count
