"""Keras in: the keras_loader plugin (.keras and SavedModel through tf2onnx), the keras distill backend, and the
examples/keras-iris workflow end to end. Slow (TensorFlow takes ~10 s to import); skipped without onnxopt[tf]."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from paths import ROOT

import onnxopt
from onnxopt_plugins.distill import distill

# find_spec, not importorskip: collecting this file in the default run must not import TensorFlow (~10 s)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("tensorflow", "tf2onnx")), reason="needs onnxopt[tf]"
    ),
]


@pytest.fixture(scope="module")
def keras_mlp(tmp_path_factory):
    """A small trained functional Keras model (two layers, softmax head) and its saved .keras file."""
    import keras

    folder = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    model.fit(x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0), epochs=3, verbose=0)
    model.save(folder / "mlp.keras")
    return model, folder / "mlp.keras", x


def test_keras_file_converts_on_load_and_matches_keras(keras_mlp, tmp_path):
    model, path, x = keras_mlp
    out = tmp_path / "mlp.onnx"
    report = onnxopt.optimize(path, out, passes=["fold"])
    assert report.exit_code == 0, report.message
    session = ort.InferenceSession(str(out))
    assert [i.name for i in session.get_inputs()] == ["features"]
    got = session.run(None, {"features": x})[0]  # 64 rows: the batch dimension is dynamic
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    assert path.exists() and not list(path.parent.glob("*.onnx"))  # the input is read, never written


def test_saved_model_folder_converts_on_load(keras_mlp, tmp_path):
    model, _, x = keras_mlp
    folder = tmp_path / "saved"
    model.export(str(folder))
    out = tmp_path / "sm.onnx"
    report = onnxopt.optimize(folder, out, passes=["fold"])
    assert report.exit_code == 0, report.message
    session = ort.InferenceSession(str(out))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def test_unreadable_keras_file_is_a_one_line_error(tmp_path, run_cli):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    result = run_cli("optimize", bad, "-o", tmp_path / "x.onnx", "--pass", "fold")
    assert result.returncode == 2 and "Keras cannot load it" in result.stderr and "Traceback" not in result.stderr


KERAS_STUDENT = """
import keras

def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,), name="x"), keras.layers.BatchNormalization(),
                             keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3, activation="softmax")])
"""


def test_keras_student_distilled_with_the_teacher_names(fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXOPT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "kstudent.py").write_text(KERAS_STUDENT)
    out = tmp_path / "student.onnx"
    report = distill(fixtures_dir / "iris_mlp.onnx", out, data=fixtures_dir / "iris_mlp_calib.npz",
                             val=fixtures_dir / "iris_mlp_val.npz", student=f"{tmp_path / 'kstudent.py'}:build",
                             backend="keras", epochs=150, lr=0.03, batch_size=8, patience=40)  # fmt: skip
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert stats["backend"] == "keras" and stats["validation"]["top1_agreement"] >= 0.9
    graph = onnx.load(out).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["probabilities"]


def test_keras_iris_example_runs_end_to_end(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keras-iris" / "run_example.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "ONNXOPT_CACHE_DIR": str(tmp_path / "c")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout and result.stdout.count("  ok: ") >= 14
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == sorted([
        "iris_fp32.onnx", "iris_int8.onnx", "iris_pruned.onnx", "iris_narrow.onnx", "iris_clustered.onnx",
        "iris_student_keras.onnx", "iris_student_width.onnx"])  # fmt: skip
