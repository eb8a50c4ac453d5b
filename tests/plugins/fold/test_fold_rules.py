"""fold's own rewrite rules (plugins/fold/chains.py, MatMul + Add -> Gemm): each fires where it computes the
same thing and nowhere else, and the folded model gives the original's outputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_fold_safety import _fold, _model, _ops

RNG = np.random.default_rng(0)


def _ints(name: str, values: list[int]):
    return numpy_helper.from_array(np.array(values, np.int64), name)


@pytest.mark.parametrize(("outer", "merged"), [([1], True), ([3, 0], True), ([-1], False)])
def test_unsqueezes_merge_with_non_negative_constant_axes(tmp_path, outer, merged):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unsqueeze", ["r", "inner"], ["u1"]),
             helper.make_node("Unsqueeze", ["u1", "outer"], ["y"])]  # fmt: skip
    rank = 4 + len(outer)
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)],
                   [_ints("inner", [0, 2]), _ints("outer", outer)])  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert _ops(out) == ["Relu", "Unsqueeze"] + ["Unsqueeze"] * (not merged)
    assert report.steps[0].stats.get("rules", {}).get("unsqueeze_merge", 0) == int(merged)


def test_combined_unsqueeze_axes_are_the_two_unsqueezes():
    from onnxopt_plugins.fold.chains import _combined_unsqueeze_axes

    x = np.zeros((2, 3))
    for inner_count, outer_count in itertools.product((1, 2), (1, 2)):
        for inner in itertools.combinations(range(2 + inner_count), inner_count):
            middle = np.expand_dims(x, inner)
            for outer in itertools.combinations(range(middle.ndim + outer_count), outer_count):
                want = np.expand_dims(middle, outer).shape
                assert np.expand_dims(x, tuple(_combined_unsqueeze_axes(list(inner), list(outer)))).shape == want


@pytest.mark.parametrize(("opset", "merged"), [(13, False), (14, True)])
def test_reshape_to_a_shape_read_off_a_tensor_merges_from_opset_14(tmp_path, opset, merged):
    """``allowzero`` arrives in opset 14: before it the two Reshapes stay."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["xf"]), helper.make_node("Shape", ["y"], ["ys"]),
             helper.make_node("Reshape", ["xf", "ys"], ["z"])]  # fmt: skip
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b"])], [_ints("flat", [-1])],
                   opset=opset)  # fmt: skip
    feed = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32), "y": np.zeros((4, 6), np.float32)}
    out, report = _fold(tmp_path, model, feed)
    assert _ops(out).count("Reshape") == 2 - merged
    assert report.steps[0].stats.get("rules", {}).get("reshape_into_shape_target", 0) == int(merged)


@pytest.mark.parametrize(("shape", "dropped"), [([6], True), ([2, 3], False)])
def test_a_flat_reshape_goes_only_for_a_vector(tmp_path, shape, dropped):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "flat"], ["f"]),
             helper.make_node("Neg", ["f"], ["y"])]  # fmt: skip
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])], [_ints("flat", [-1])])  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": RNG.standard_normal(shape).astype(np.float32)})
    assert _ops(out) == ["Relu"] + ["Reshape"] * (not dropped) + ["Neg"]


@pytest.mark.parametrize(
    ("dtype", "bias_shape", "fused"),
    [(np.float32, [4], True), (np.float32, [3, 4], True), (np.float32, [1, 3, 4], False), (np.int32, [4], False)],
)
def test_matmul_add_becomes_gemm_only_where_gemm_computes_the_same(tmp_path, dtype, bias_shape, fused):
    """2-D float operands and a bias of rank <= 2; Gemm has no integer kernel and never raises the rank."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    x = (RNG.standard_normal((3, 5)) * 4).astype(dtype)
    inits = [numpy_helper.from_array((RNG.standard_normal((5, 4)) * 4).astype(dtype), "w"),
             numpy_helper.from_array((RNG.standard_normal(bias_shape) * 4).astype(dtype), "b")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])]
    out_shape = [3, 4] if len(bias_shape) <= 2 else [None] * len(bias_shape)
    model = _model(nodes, [helper.make_tensor_value_info("x", elem, [3, 5])],
                   [helper.make_tensor_value_info("y", elem, out_shape)], inits)  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": x})
    assert _ops(out) == (["Gemm"] if fused else ["MatMul", "Add"])
    assert report.steps[0].stats.get("rules", {}).get("matmul_add_to_gemm", 0) == int(fused)


def _count_step_runs(monkeypatch) -> list[str]:
    """The names of the round steps fold runs, in order (each step wrapped to record itself)."""
    from onnxopt_plugins.fold.run import FoldPass

    ran: list[str] = []
    rounds = FoldPass._rounds

    def recorded(self):
        def wrap(name, step):
            return name, lambda model: (ran.append(name), step(model))[1]

        return [wrap(name, step) for name, step in rounds(self)]

    monkeypatch.setattr(FoldPass, "_rounds", recorded)
    return ran


def test_fold_stops_once_every_step_has_run_since_the_last_change(tmp_path, monkeypatch):
    """Only the first step changes anything (an Identity): the steps after it and the first once more run, not a
    second full round."""
    ran = _count_step_runs(monkeypatch)
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Relu", ["i"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert _ops(out) == ["Relu"]
    steps = len(set(ran))
    assert ran[0] == ran[-1] == "no_ops_removed" and len(ran) == steps + 1
    assert report.steps[0].stats["rounds"] == 2


def test_a_change_by_the_last_step_gives_the_earlier_steps_another_run(tmp_path, monkeypatch):
    """Sharing the equal initializers (the last step) makes the two Adds equal; the next round's CSE merges them."""
    ran = _count_step_runs(monkeypatch)
    weight = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "w1"], ["a"]), helper.make_node("Add", ["x", "w2"], ["b"]),
             helper.make_node("Mul", ["a", "b"], ["y"])]  # fmt: skip
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                   [numpy_helper.from_array(weight, "w1"), numpy_helper.from_array(weight.copy(), "w2")])  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": RNG.standard_normal((2, 3)).astype(np.float32)})
    assert _ops(out) == ["Add", "Mul"]
    stats = report.steps[0].stats
    assert stats["initializers_shared"] == 1 and stats["subexpressions_shared"] >= 1
    assert ran.index("subexpressions_shared", ran.index("initializers_shared")) > ran.index("initializers_shared")
