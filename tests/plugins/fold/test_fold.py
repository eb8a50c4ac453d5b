"""The fold pass on every fixture: the graph gets simpler and onnxruntime gives the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxopt

FIXTURES = ["iris_mlp", "digits_cnn", "tiny_transformer", "if_model"]


def _outputs(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("name", FIXTURES)
def test_fold_keeps_outputs(name, fixtures_dir, tmp_path):
    source, out = fixtures_dir / f"{name}.onnx", tmp_path / f"{name}.onnx"
    report = onnxopt.optimize(
        source, out, passes=["fold"], data=fixtures_dir / f"{name}_val.npz", gates={"atol": 1e-5, "rtol": 1e-4}
    )
    assert report.exit_code == 0, report.message
    inputs = np.load(fixtures_dir / f"{name}_val.npz")["input"]
    for rows in (inputs, inputs[:1], inputs[-1:]):  # single rows reach both If branches
        for got, want in zip(_outputs(out, {"input": rows}), _outputs(source, {"input": rows})):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fold_fuses_batchnorm_and_drops_identity_and_dropout(fixtures_dir, tmp_path):
    out = tmp_path / "d.onnx"
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=["fold"])
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("Conv") == 2 and not {"BatchNormalization", "Identity", "Dropout"} & set(ops)
    stats = report.steps[0].stats
    assert stats["batchnorm_fused"] == 2 and stats["no_ops_removed"] >= 2


def test_fold_simplifies_inside_if_branches(fixtures_dir, tmp_path):
    out = tmp_path / "if.onnx"
    report = onnxopt.optimize(
        fixtures_dir / "if_model.onnx", out, passes=["fold"], data=fixtures_dir / "if_model_val.npz"
    )
    assert report.exit_code == 0, report.message

    def branch_ops(path):
        (if_node,) = [n for n in onnx.load(path).graph.node if n.op_type == "If"]
        return [n.op_type for attr in if_node.attribute for n in attr.g.node]

    before, after = branch_ops(fixtures_dir / "if_model.onnx"), branch_ops(out)
    assert len(after) < len(before)
    assert "Identity" not in after and after.count("Mul") < before.count("Mul")  # x * 1 is gone


def test_fold_options_turn_steps_off(fixtures_dir, tmp_path):
    out = tmp_path / "d.onnx"
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=["fold:fuse_batchnorm=false"])
    assert "BatchNormalization" in {n.op_type for n in onnx.load(out).graph.node}
    assert "batchnorm_fused" not in report.steps[0].stats


def test_input_standardization_folds_into_the_first_gemm(fixtures_dir, tmp_path):
    out = tmp_path / "iris.onnx"
    report = onnxopt.optimize(fixtures_dir / "iris_mlp.onnx", out, passes=["fold"],
                              data=fixtures_dir / "iris_mlp_val.npz",
                              gates={"atol": 1e-5, "rtol": 1e-4, "max_accuracy_drop": 0.0})  # fmt: skip
    assert report.exit_code == 0, report.message
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    assert report.steps[0].stats["affine_fused"] == 1
