"""A scikit-learn model (ai.onnx.ml ops, a ``sequence<map<int64, float>>`` output) through load, save and every command.

onnx-ir has no map type: ``model_io.load`` sets such types aside in the value's metadata and ``save`` puts them
back, so the saved model is the one onnxruntime ran, with the passes applied to what onnx-ir can hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from paths import FIXTURES

from onnxopt import api, model_io

MODEL = FIXTURES / "sklearn_iris.onnx"
VAL = FIXTURES / "sklearn_iris_val.npz"


def _run(path: Path) -> tuple[np.ndarray, list[dict[int, float]]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, maps = session.run(None, {"float_input": np.load(VAL)["float_input"]})
    return labels, maps


def _assert_same_model_outputs(path: Path) -> None:
    """``path`` declares the original's outputs, types included, and computes the same on the val split."""
    original, written = onnx.load(MODEL), onnx.load(path)
    assert [o.SerializeToString() for o in written.graph.output] == [
        o.SerializeToString() for o in original.graph.output
    ]
    onnx.checker.check_model(written, full_check=True)
    labels, maps = _run(path)
    want_labels, want_maps = _run(MODEL)
    np.testing.assert_array_equal(labels, want_labels)
    assert [sorted(m) for m in maps] == [[0, 1, 2]] * len(want_maps)
    np.testing.assert_allclose(
        [[m[c] for c in range(3)] for m in maps], [[m[c] for c in range(3)] for m in want_maps], rtol=1e-6
    )


def test_map_type_survives_load_and_save(tmp_path: Path) -> None:
    model = model_io.load(MODEL)
    assert model.graph.outputs[1].type is None  # set aside: onnx_ir cannot hold it
    saved = model_io.save(model, tmp_path / "same.onnx")
    _assert_same_model_outputs(saved)
    assert not any(o.metadata_props for o in onnx.load(saved).graph.output)  # the carrier is gone


def test_map_type_survives_clone_and_a_protobuf_round_trip(tmp_path: Path) -> None:
    """A pass may clone the model or convert it to protobuf and back: the kept type travels with the value."""
    model = ir.from_proto(ir.to_proto(model_io.load(MODEL).clone()))
    _assert_same_model_outputs(model_io.save(model, tmp_path / "round.onnx"))


def test_fold_runs_on_what_onnx_ir_holds(tmp_path: Path) -> None:
    """fold drops skl2onnx's int64 -> int64 Cast and leaves the ai.onnx.ml nodes alone."""
    folded = api.apply_passes(model_io.load(MODEL), ["fold"])
    saved = model_io.save(folded, tmp_path / "folded.onnx")
    ops = [n.op_type for n in onnx.load(saved).graph.node]
    assert ops == ["LinearClassifier", "Normalizer", "ZipMap"]
    _assert_same_model_outputs(saved)


def test_inspect(run_cli) -> None:
    result = run_cli("inspect", MODEL)
    assert result.returncode == 0, result.stderr
    assert "ai.onnx.ml::ZipMap" in result.stdout and "ai.onnx.ml::LinearClassifier" in result.stdout
    assert "output_probability seq(map(int64, float))" in result.stdout
    result = run_cli("inspect", MODEL, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"] == 4


def test_optimize_fold(run_cli, tmp_path: Path) -> None:
    result = run_cli("optimize", MODEL, "-o", tmp_path / "out.onnx", "--pass", "fold", "--data", VAL)
    assert result.returncode == 0, result.stderr
    assert "[pass] output 'output_probability'" in result.stdout  # compared, not skipped
    _assert_same_model_outputs(tmp_path / "out.onnx")


def test_validate_on_itself(run_cli) -> None:
    result = run_cli("validate", MODEL, MODEL, "--data", VAL)
    assert result.returncode == 0, result.stderr
    assert "[pass] output 'output_probability'" in result.stdout


def _dict_vectorizer_model() -> onnx.ModelProto:
    """The fixture behind a DictVectorizer (input ``map(int64, float)``) with string class labels (output
    ``seq(map(string, float))``): a map on the input side, and another key type."""
    model = onnx.load(MODEL)
    graph, names = model.graph, ["setosa", "versicolor", "virginica"]
    classifier, zipmap = graph.node[0], graph.node[3]
    for node, old, new in (
        (classifier, "classlabels_ints", "classlabels_strings"),
        (zipmap, "classlabels_int64s", "classlabels_strings"),
    ):
        node.attribute.remove(next(a for a in node.attribute if a.name == old))
        node.attribute.append(onnx.helper.make_attribute(new, names))
    classifier.output[0] = "output_label"
    graph.node.remove(graph.node[2])  # the Cast
    graph.node.insert(0, onnx.helper.make_node("DictVectorizer", ["features"], ["float_input"], domain="ai.onnx.ml",
                                               int64_vocabulary=[0, 1, 2, 3]))  # fmt: skip
    scalar = onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [])
    graph.input[0].CopyFrom(
        onnx.helper.make_value_info("features", onnx.helper.make_map_type_proto(onnx.TensorProto.INT64, scalar))
    )
    graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("output_label", onnx.TensorProto.STRING, [None]))
    string_map = onnx.helper.make_map_type_proto(onnx.TensorProto.STRING, scalar)
    graph.output[1].CopyFrom(
        onnx.helper.make_value_info("output_probability", onnx.helper.make_sequence_type_proto(string_map))
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def test_map_input_and_string_keys_survive_load_and_save(tmp_path: Path) -> None:
    original = _dict_vectorizer_model()
    onnx.save(original, tmp_path / "dv.onnx")
    model = model_io.load(tmp_path / "dv.onnx")
    assert [model_io.kept_type_text(v) for v in (model.graph.inputs[0], *model.graph.outputs)] == [
        "map(int64, float)",
        None,
        "seq(map(string, float))",
    ]
    written = onnx.load(model_io.save(model, tmp_path / "out.onnx"))
    assert list(written.graph.input) == list(original.graph.input)
    assert list(written.graph.output) == list(original.graph.output)
    feed = {"features": {0: 5.1, 1: 3.5, 2: 1.4, 3: 0.2}}
    runs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)
        for p in (tmp_path / "dv.onnx", tmp_path / "out.onnx")
    ]
    assert runs[0][0].tolist() == runs[1][0].tolist() == ["setosa"]
    assert runs[0][1] == runs[1][1]
