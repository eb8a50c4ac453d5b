"""``--shape`` shapes the test data only (issue 14): fold keeps every symbolic input dim unless asked.

The model is a small text-recognizer-like graph built here: symbolic batch and width, a Conv, a mean over
the height, and a Reshape whose target is computed from ``Shape`` (what exporters write), which folds away
only when the input dims are fixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


def _recognizer() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "first_two"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "two_by_two"),
        numpy_helper.from_array(np.array([2], np.int64), "height_axis"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c", "height_axis"], ["m"], keepdims=0),  # [batch, 4, width]
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),  # [batch, width, 4]
        helper.make_node("Shape", ["t"], ["s"]),
        helper.make_node("Gather", ["s", "first_two"], ["bw"], axis=0),
        helper.make_node("Concat", ["bw", "two_by_two"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["y"]),  # [batch, width, 2, 2]
    ]
    graph = helper.make_graph(
        nodes, "rec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width", 2, 2])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _input_dims(path: Path) -> list[int | str]:
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("fix", [False, True])
def test_shape_option_fixes_input_dims_only_when_asked(tmp_path, run_cli, fix):
    source, out = tmp_path / "rec.onnx", tmp_path / "rec.opt.onnx"
    onnx.save(_recognizer(), source)
    before = source.read_bytes()
    fold = "fold:fix_input_shapes=true" if fix else "fold"
    result = run_cli("optimize", source, "-o", out, "--pass", fold, "--shape", "x=2x3x8x16")
    assert result.returncode == 0, result.stderr
    assert source.read_bytes() == before
    ops = [n.op_type for n in onnx.load(out).graph.node]
    unused = np.random.default_rng(1).standard_normal((5, 3, 8, 37)).astype(np.float32)  # a size the run never used
    if fix:
        assert _input_dims(out) == [2, 3, 8, 16]
        assert "Shape" not in ops  # the shape arithmetic folded into a constant target
        with pytest.raises(Exception, match="(?i)dimension|shape"):
            _run(out, unused)
    else:
        assert _input_dims(out) == ["batch", 3, 8, "width"]
        assert "Shape" in ops
        got = _run(out, unused)
        assert got.shape == (5, 37, 2, 2)
        np.testing.assert_allclose(got, _run(source, unused), rtol=1e-5, atol=1e-6)
    used = np.random.default_rng(2).standard_normal((2, 3, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(out, used), _run(source, used), rtol=1e-5, atol=1e-6)
