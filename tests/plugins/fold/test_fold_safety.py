"""What the peers got wrong on real models, each as a test of fold (issue 3), on small models built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt


def _model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=None, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    if ir_version is not None:
        model.ir_version = ir_version
    return model


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _fold(
    tmp_path: Path, model: onnx.ModelProto, feed: dict, fold: str = "fold", **kwargs
) -> tuple[Path, onnxopt.Report]:
    source, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    data = tmp_path / "data.npz"
    np.savez(data, **feed)
    report = onnxopt.optimize(source, out, passes=[fold], data=data, gates={"atol": 1e-5, "rtol": 1e-5}, **kwargs)
    assert report.exit_code == 0, report.message
    assert report.steps[0].status in ("kept", "unchanged")
    for got, want in zip(_run(out, feed), _run(source, feed)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return out, report


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def _flatten_by_shape_arithmetic(declared_out: list) -> onnx.ModelProto:
    """y = Reshape(x, [Shape(x)[0], -1]) spelled with Shape / Gather / Unsqueeze / Concat, as exporters do."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, declared_out)],
        inits,
    )
    # a wrong intermediate annotation as well: folding must not believe it either
    model.graph.value_info.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    return model


def test_wrong_declared_output_shape_is_not_trusted(tmp_path):
    feed = {"x": np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)}
    out, _ = _fold(tmp_path, _flatten_by_shape_arithmetic(["batch", 10]), feed)  # truly [batch, 20]
    assert _run(out, feed)[0].shape == (3, 20)


def test_shape_specialization_folds_shape_arithmetic(tmp_path):
    feed = {"x": np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)}
    model = _flatten_by_shape_arithmetic(["batch", 20])
    (tmp_path / "generic").mkdir()
    (tmp_path / "special").mkdir()
    generic, _ = _fold(tmp_path / "generic", model, feed)
    special, report = _fold(tmp_path / "special", model, feed, "fold:fix_input_shapes=true", shapes={"x": (2, 4, 5)})
    assert _ops(special) == ["Reshape"]
    assert len(_ops(special)) < len(_ops(generic))
    assert report.steps[0].stats["input_shapes_fixed"] == 1
    assert [d.dim_value for d in onnx.load(special).graph.input[0].type.tensor_type.shape.dim] == [2, 4, 5]


def test_nothing_outside_an_opset_12_model_is_emitted(tmp_path):
    """onnxscript's reshape rules write allowzero (opset 14); an opset-12 result must still load."""
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["a"]),
        helper.make_node("Reshape", ["a", "s2"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([6, 4], np.int64), "s1"),
        numpy_helper.from_array(np.array([4, 6], np.int64), "s2"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])], inits, opset=12)  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4)})
    folded = onnx.load(out)
    onnx.checker.check_model(folded, full_check=True)
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]
    assert all(a.name != "allowzero" for n in folded.graph.node for a in n.attribute)
    assert folded.opset_import[0].version == 12


def test_if_model_with_fixed_shapes_keeps_both_branches_working(tmp_path, fixtures_dir):
    out = tmp_path / "if.onnx"
    report = onnxopt.optimize(fixtures_dir / "if_model.onnx", out, passes=["fold:fix_input_shapes=true"],
                              shapes={"input": (1, 4)}, data=fixtures_dir / "if_model_val.npz",
                              batch_size=1)  # fmt: skip
    assert report.exit_code == 0, report.message
    rows = np.load(fixtures_dir / "if_model_val.npz")["input"]
    for row in rows:  # one row at a time: each branch is taken by some rows
        np.testing.assert_allclose(
            _run(out, {"input": row[None]})[0], _run(fixtures_dir / "if_model.onnx", {"input": row[None]})[0], atol=1e-6
        )


@pytest.mark.parametrize("ir_version", [3, 7])
def test_initializers_leave_the_inputs(tmp_path, ir_version):
    """onnxoptimizer raised IR 3 to 4 but left initializers as inputs: onnxruntime could not fold them."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("MatMul", ["x", "w2"], ["y"])]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3]),
    ]
    model = _model(
        nodes,
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
        opset=9,
        ir_version=ir_version,
    )
    out, report = _fold(tmp_path, model, {"x": np.ones((1, 4), np.float32)})
    folded = onnx.load(out)
    assert folded.ir_version >= 4
    assert [i.name for i in folded.graph.input] == ["x"]
    assert report.steps[0].stats["initializers_taken_out_of_inputs"] >= 1


def test_fused_ops_are_never_undone(tmp_path):
    """onnxsim turned Gelu back into Div/Erf/Mul and a 3-D MatMul into Reshape-Gemm-Reshape."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32) + 0.5, "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Gelu", ["a"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, 8])], [w, b],
                   opset=20)  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)})
    assert _ops(out) == ["MatMul", "Add", "Gelu"]


@pytest.mark.parametrize("generator", ["ConstantOfShape", "Expand"])
def test_generated_weights_do_not_blow_up_the_file(tmp_path, generator):
    """A 9 KB model with weights from ConstantOfShape grew to 513-575 MB in onnxslim, onnxsim and ORT."""
    shape = numpy_helper.from_array(np.array([512, 1024], np.int64), "shape")
    half = numpy_helper.from_array(np.array([0.5], np.float32), "half")
    make = (helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=half) if generator == "ConstantOfShape"
            else helper.make_node("Expand", ["half", "shape"], ["ones"]))  # fmt: skip
    nodes = [
        make,
        helper.make_node("Add", ["ones", "ones"], ["weights"]),  # 2 MiB of constants if the generator folds
        helper.make_node("Mul", ["x", "weights"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 1024])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 1024])], [shape, half])  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": np.ones((512, 1024), np.float32)})
    assert out.stat().st_size < (tmp_path / "in.onnx").stat().st_size + 2**20
    assert generator in _ops(out)
    if generator == "Expand":  # onnxscript never folds ConstantOfShape; Expand is stopped by the size guard
        assert "size_guard" in report.steps[0].stats


def test_unknown_domains_are_folded_around(tmp_path):
    """A contrib op onnxruntime knows stays; the constant work around it folds."""
    nodes = [
        helper.make_node("Add", ["two", "three"], ["five"]),
        helper.make_node("Mul", ["x", "five"], ["scaled"]),
        helper.make_node("Gelu", ["scaled"], ["g"], domain="com.microsoft"),
        helper.make_node("Identity", ["g"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.float32), "two"),
        numpy_helper.from_array(np.array(3, np.float32), "three"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits,
                   domains=["com.microsoft"])  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)})
    assert _ops(out) == ["Mul", "Gelu"]


def test_an_op_nobody_knows_never_fails_fold(tmp_path):
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Mystery", ["a"], ["y"], domain="com.example"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], domains=["com.example"])  # fmt: skip
    onnx.save(model, tmp_path / "m.onnx")
    folded = onnxopt.apply_passes(onnxopt.load(tmp_path / "m.onnx", check=False), ["fold"])
    assert [n.op_type for n in folded.graph] == ["Mystery"]


def test_common_subexpressions_and_duplicate_initializers_are_shared(tmp_path):
    inits = [numpy_helper.from_array(np.full(4, 2.0, np.float32), name) for name in ("two_a", "two_b")]
    nodes = [
        helper.make_node("Mul", ["x", "two_a"], ["a"]),
        helper.make_node("Mul", ["x", "two_b"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": np.ones((3, 4), np.float32)})
    assert _ops(out) == ["Mul", "Add"] and len(onnx.load(out).graph.initializer) == 1
    assert report.steps[0].stats["initializers_shared"] == 1 and report.steps[0].stats["subexpressions_shared"] >= 1


def test_loop_body_is_simplified(tmp_path):
    """Identity and constant arithmetic inside a Loop body fold; the loop still computes the same."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["c1", "c1"], ["two"]),
            helper.make_node("Identity", ["acc_in"], ["acc_id"]),
            helper.make_node("Mul", ["acc_id", "two"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "c1")],
    )  # fmt: skip
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")]
    model = _model([helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": np.ones((2, 3), np.float32)})
    (loop,) = onnx.load(out).graph.node
    body_ops = [n.op_type for n in loop.attribute[0].g.node]
    assert "Add" not in body_ops and "Identity" not in body_ops[:-1] and body_ops.count("Mul") == 1


def test_scale_and_shift_after_gemm_fold_into_it_keeping_the_output_name(tmp_path):
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "w"),  # transB: [N, K]
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "scale"),
        numpy_helper.from_array(np.array(0.25, np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Mul", ["scale", "g"], ["m"]),
        helper.make_node("Sub", ["m", "shift"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], inits)  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": rng.standard_normal((6, 4)).astype(np.float32)})
    folded = onnx.load(out)
    assert [n.op_type for n in folded.graph.node] == ["Gemm"] and folded.graph.output[0].name == "y"
    assert report.steps[0].stats["affine_fused"] >= 1


def test_identity_returning_an_outer_value_from_a_branch_is_kept(tmp_path):
    """silero-vad's nested If branches return outer-scope values through Identity; onnx_ir 1.1.0 crashed on it."""

    def branch(name: str, source: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", [source], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])  # fmt: skip

    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "r"), else_branch=branch("else", "n")),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
                   [numpy_helper.from_array(np.array(0, np.float32), "zero")])  # fmt: skip
    for row in ([1.0, 2.0, -1.0], [-3.0, 1.0, 0.5]):
        (tmp_path / str(row[0])).mkdir()
        _fold(tmp_path / str(row[0]), model, {"x": np.array(row, np.float32)})


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_per_channel_add_and_mul_fold_into_a_bias_free_conv(tmp_path, op):
    """PP-OCR's squeeze-excite blocks: Conv without bias -> Add([1, C, 1, 1]); onnxscript folds only with a bias."""
    rng = np.random.default_rng(3)
    weight_shape = (4, 3, 3, 3) if op == "Conv" else (3, 4, 3, 3)
    inits = [
        numpy_helper.from_array(rng.standard_normal(weight_shape).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "shift"),
        numpy_helper.from_array(rng.standard_normal((4, 1, 1)).astype(np.float32), "scale"),
    ]
    nodes = [
        helper.make_node(op, ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "shift"], ["a"]),
        helper.make_node("Mul", ["a", "scale"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])], inits)  # fmt: skip
    out, report = _fold(tmp_path, model, {"x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32)})
    assert _ops(out) == [op]
    assert report.steps[0].stats["rules"]["affine_into_weights"] == 1


def test_small_constant_of_shape_folds(tmp_path):
    """onnxscript never folds ConstantOfShape; a 4-element one (a mask, pad amounts) should fold."""
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["four"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))
        ),
        helper.make_node("Mul", ["ones", "minus"], ["neg"]),
        helper.make_node("Add", ["x", "neg"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([4], np.int64), "four"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "minus"),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)  # fmt: skip
    out, _ = _fold(tmp_path, model, {"x": np.ones((2, 4), np.float32)})
    assert _ops(out) == ["Add"]


def test_chains_found_in_minilm_merge(tmp_path):
    """Unsqueeze(Unsqueeze(Range)), Reshape(Reshape(x, [-1]), Shape(y)) and a flat Reshape of a 1-D value."""
    nodes = [
        helper.make_node("Range", ["zero_i", "n_i", "one_i"], ["r"]),
        helper.make_node("Unsqueeze", ["r", "ax12"], ["u1"]),
        helper.make_node("Unsqueeze", ["u1", "ax3"], ["u2"]),  # [n, 1, 1, 1]
        helper.make_node("Reshape", ["x", "flat"], ["xf"]),
        helper.make_node("Shape", ["y"], ["ys"]),
        helper.make_node("Reshape", ["xf", "ys"], ["xr"]),
        helper.make_node("Concat", ["ys", "ys"], ["cat"], axis=0),
        helper.make_node("Reshape", ["cat", "flat"], ["catf"]),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             [("zero_i", 0), ("n_i", 4), ("one_i", 1), ("ax12", [1, 2]), ("ax3", [3]), ("flat", [-1])]]  # fmt: skip
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])],
                   [helper.make_tensor_value_info("u2", TensorProto.INT64, [4, 1, 1, 1]),
                    helper.make_tensor_value_info("xr", TensorProto.FLOAT, ["a", "b"]),
                    helper.make_tensor_value_info("catf", TensorProto.INT64, [4])], inits)  # fmt: skip
    feed = {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "y": np.zeros((4, 6), np.float32)}
    out, report = _fold(tmp_path, model, feed)
    rules = report.steps[0].stats["rules"]
    assert rules["reshape_into_shape_target"] == 1 and rules["flat_reshape_of_vector"] == 1
    assert _ops(out).count("Unsqueeze") <= 1 and _ops(out).count("Reshape") == 1
