"""Nodes onnxscript's folder leaves with constant inputs (multi-output ops) are folded through onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt
from onnxopt_plugins.fold import folding


def _model(nodes, inits, outputs, opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _fold(model: onnx.ModelProto, tmp_path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Op types after fold, and the outputs of the original and of the folded model on the same input."""
    folded = onnxopt.apply_passes(ir.from_proto(model), ["fold"])
    onnxopt.save(folded, tmp_path / "folded.onnx")
    feed = {"x": np.arange(3, dtype=np.float32)}
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)  # noqa: E731
    return [n.op_type for n in folded.graph], run(model.SerializeToString()), run(str(tmp_path / "folded.onnx"))


def test_split_and_layer_norm_of_constants_fold(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(3, np.float32), "gamma")]  # fmt: skip
    nodes = [
        helper.make_node("Split", ["w"], ["a", "b"], axis=1, num_outputs=2),  # two [4, 3]
        helper.make_node("LayerNormalization", ["a", "gamma"], ["n", "mean", "inv_std"], axis=-1),
        helper.make_node("Add", ["n", "b"], ["s"]),
        helper.make_node("Mul", ["s", "inv_std"], ["t"]),
        helper.make_node("Add", ["t", "x"], ["y"]),
    ]
    ops, want, got = _fold(_model(nodes, inits, ["y"]), tmp_path)
    assert ops == ["Add"]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


def test_quantization_and_training_dropout_stay(tmp_path):
    """DequantizeLinear of a constant keeps the model's quantization visible; a training Dropout is random."""
    inits = [
        numpy_helper.from_array(np.array([1, 2, 3], np.int8), "q"),
        numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "c"),
        numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
        numpy_helper.from_array(np.array(True), "training"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale"], ["dq"]),
        helper.make_node("Dropout", ["c", "ratio", "training"], ["dropped", "mask"]),
        helper.make_node("Add", ["dq", "x"], ["y"]),
        helper.make_node("Add", ["dropped", "x"], ["z"]),
    ]
    folded = onnxopt.apply_passes(ir.from_proto(_model(nodes, inits, ["y", "z"])), ["fold"])
    assert sorted(n.op_type for n in folded.graph) == ["Add", "Add", "DequantizeLinear", "Dropout"]


@pytest.mark.parametrize("extra", [0, 2])
def test_the_element_limit_holds_for_evaluated_nodes(extra):
    """A Split of a constant with the limit's number of elements folds; two more elements and it stays."""
    size = folding.FOLDED_ELEMENTS_LIMIT + extra
    inits = [numpy_helper.from_array(np.zeros(size, np.float32), "w")]
    nodes = [
        helper.make_node("Split", ["w"], ["a", "b"], axis=0, num_outputs=2),
        helper.make_node("ReduceSum", ["a"], ["sa"], keepdims=1),
        helper.make_node("ReduceSum", ["b"], ["sb"], keepdims=1),
        helper.make_node("Add", ["sa", "sb"], ["s"]),
        helper.make_node("Add", ["s", "x"], ["y"]),
    ]
    folded = onnxopt.apply_passes(ir.from_proto(_model(nodes, inits, ["y"])), ["fold"])
    ops = [n.op_type for n in folded.graph]
    assert ops == ["Add"] if extra == 0 else "Split" in ops
