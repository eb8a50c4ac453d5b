"""The distill plugin: teacher outputs cached by hash, the ONNX -> torch converter, students of every kind
trained by the torch backend and re-exported for onnxruntime, and the user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import onnxopt
from onnxopt_plugins.distill import distill
from onnxopt_plugins.distill.logits import teacher_outputs

FAST = {"epochs": 4, "lr": 0.01}  # enough to prove training moves the student; the bench trains for real


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXOPT_CACHE_DIR", str(tmp_path / "cache"))


def _accuracy(model: Path, npz: Path) -> float:
    data = np.load(npz)
    scores = ort.InferenceSession(str(model)).run(None, {"input": data["input"]})[0]
    return float((scores.argmax(1) == data["labels"]).mean())


def test_teacher_outputs_are_computed_once_and_reused_per_teacher_and_data(fixtures_dir, tmp_path):
    teacher = fixtures_dir / "digits_cnn.onnx"
    inputs = {"input": np.load(fixtures_dir / "digits_cnn_calib.npz")["input"]}
    first = teacher_outputs(
        teacher, inputs, ["logits"], cache_dir=tmp_path, batch_size=7
    )  # batches that do not divide the rows
    again = teacher_outputs(teacher, inputs, ["logits"], cache_dir=tmp_path)
    expected = ort.InferenceSession(str(teacher)).run(None, inputs)[0]
    assert not first.cached and again.cached and again.files == first.files
    np.testing.assert_allclose(first.outputs["logits"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(again.outputs["logits"], first.outputs["logits"])
    assert isinstance(again.outputs["logits"], np.memmap)  # read back from the file, not loaded whole
    other = teacher_outputs(teacher, {"input": inputs["input"][:50]}, ["logits"], cache_dir=tmp_path)
    assert not other.cached and other.files != first.files and len(other.outputs["logits"]) == 50
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert cached == sorted(f.name for f in [*first.files.values(), *other.files.values()])  # no partial files


def test_only_the_outputs_asked_for_are_computed_and_each_is_cached_on_its_own(fixtures_dir, tmp_path):
    teacher = fixtures_dir / "coupled_cnn.onnx"  # outputs logits and aux
    names = [o.name for o in onnx.load(teacher).graph.output]
    inputs = {"input": np.random.default_rng(0).standard_normal((10, 3, 16, 16)).astype(np.float32)}
    expected = dict(zip(names, ort.InferenceSession(str(teacher)).run(None, inputs)))
    last = names[-1]
    one = teacher_outputs(teacher, inputs, [last], cache_dir=tmp_path)
    assert list(one.outputs) == [last] and len(list(tmp_path.iterdir())) == 1
    np.testing.assert_allclose(one.outputs[last], expected[last], rtol=1e-5, atol=1e-5)
    every = teacher_outputs(teacher, inputs, names, cache_dir=tmp_path)  # the cached one reused, the others computed
    assert not every.cached and every.files[last] == one.files[last] and list(every.outputs) == names
    assert teacher_outputs(teacher, inputs, [last], cache_dir=tmp_path).cached


def test_held_out_split_leaves_the_training_rows_outputs_memory_mapped(fixtures_dir, tmp_path):
    """Without --val, 10 % of the rows are held out; the training rows' teacher outputs are copied to a scratch
    file (memory-mapped), not loaded whole, and hold the teacher's outputs of exactly those rows."""
    from onnxopt.session import Session
    from onnxopt_plugins.distill import DistillOptions
    from onnxopt_plugins.distill.distiller import Distillation

    teacher = fixtures_dir / "digits_cnn.onnx"
    session = Session()
    data = np.load(fixtures_dir / "digits_cnn_calib.npz")
    expected = ort.InferenceSession(str(teacher)).run(None, {"input": data["input"]})[0]
    with session.context(reference_path=teacher) as context:
        context.dataset = session.open_dataset(str(fixtures_dir / "digits_cnn_calib.npz"), session.load(teacher))
        context.stats = {}
        distillation = Distillation(DistillOptions(cache_dir=str(tmp_path / "cache")), context)
        train, val, probabilities = distillation._splits("logits")
        assert isinstance(train.teacher, np.memmap) and not probabilities
        assert len(train) + len(val) == len(expected) and len(val) == round(0.1 * len(expected))
        for split in (train, val):  # every row's outputs are the teacher's on that row's input
            rows = [np.flatnonzero((data["input"] == row).all(axis=(1, 2, 3)))[0] for row in split.inputs["input"]]
            np.testing.assert_allclose(split.teacher, expected[rows], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(split.labels, data["labels"][rows])


def test_cli_export_logits_only_writes_the_cache(fixtures_dir, tmp_path, run_cli):
    result = run_cli("distill", fixtures_dir / "iris_mlp.onnx", "--data", fixtures_dir / "iris_mlp_calib.npz",
                     "--export-logits", "--cache-dir", tmp_path / "c", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)["steps"][0]["stats"]
    (entry,) = stats["teacher_outputs"]
    saved = np.load(entry["files"]["probabilities"])
    assert saved.shape == (30, 3) and np.allclose(saved.sum(1), 1, atol=1e-5)
    assert not list(tmp_path.glob("*.onnx"))


def test_export_logits_leaves_out_outputs_that_are_not_tensors(fixtures_dir, tmp_path, run_cli):
    """sklearn's classifier also outputs a sequence of maps (ZipMap): no array to cache, and nothing trains on it."""
    result = run_cli("distill", fixtures_dir / "sklearn_iris.onnx", "--data", fixtures_dir / "sklearn_iris_val.npz",
                     "--export-logits", "--cache-dir", tmp_path / "c", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)["steps"][0]["stats"]["teacher_outputs"]
    assert list(entry["files"]) == ["output_label"] and np.load(entry["files"]["output_label"]).shape == (30,)


@pytest.mark.parametrize("name", ["digits_cnn", "iris_mlp", "tiny_transformer"])
def test_onnx_student_converts_to_torch_with_the_same_outputs(fixtures_dir, name):
    torch = pytest.importorskip("torch")
    import onnx_ir as ir

    from onnxopt_plugins.distill.onnx_to_torch import OnnxModule

    path = fixtures_dir / f"{name}.onnx"
    x = np.load(fixtures_dir / f"{name}_val.npz")["input"][:64]
    module = OnnxModule(ir.load(path)).eval()
    with torch.no_grad():
        got = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got, ort.InferenceSession(str(path)).run(None, {"input": x})[0], rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in module.parameters()) > 0  # weights are trainable parameters


def test_unsupported_op_is_named():
    pytest.importorskip("torch")
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from onnxopt_plugins.distill.onnx_to_torch import OnnxModule, UnsupportedOp

    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])  # fmt: skip
    with pytest.raises(UnsupportedOp, match="Hardmax"):
        OnnxModule(ir.from_proto(helper.make_model(graph)))


def _student_ok(student: Path, teacher: Path, feed_rows: np.ndarray) -> None:
    """The student keeps the teacher's names and runs at any batch size in onnxruntime."""
    t, s = onnx.load(teacher).graph, onnx.load(student).graph
    assert [i.name for i in s.input] == [i.name for i in t.input] and [o.name for o in s.output] == [
        o.name for o in t.output
    ]
    session = ort.InferenceSession(str(student))
    for rows in (1, 7):
        assert session.run(None, {"input": feed_rows[:rows]})[0].shape[0] == rows


def test_width_derived_iris_student_is_smaller_trained_and_validated(fixtures_dir, tmp_path):
    pytest.importorskip("torch")
    teacher, out = fixtures_dir / "iris_mlp.onnx", tmp_path / "student.onnx"
    report = distill(teacher, out, data=fixtures_dir / "iris_mlp_calib.npz", val=fixtures_dir / "iris_mlp_val.npz",
                             width=0.5, epochs=30, lr=0.01, threads=1)  # fmt: skip
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert stats["narrowed_by_prune"]["layers"] == {"fc1_out_Gemm": "10 -> 5"}
    assert stats["student_parameters"] < stats["teacher_parameters"] and stats["backend"] == "torch"
    assert stats["validation"]["top1_agreement"] >= 0.9 and stats["validation"]["student_accuracy"] >= 0.9
    _student_ok(out, teacher, np.load(fixtures_dir / "iris_mlp_val.npz")["input"])
    assert _accuracy(out, fixtures_dir / "iris_mlp_val.npz") == stats["validation"]["student_accuracy"]
    # the verdict is judged on the held-out rows, not on the rows the student was trained on
    assert report.final.compared and "iris_mlp_val" in report.final.data and "calib" not in report.final.data
    assert not any("retrained on" in note for note in report.notes)


def test_width_student_is_reconstructed_before_training_unless_told_not_to(fixtures_dir, tmp_path, run_cli):
    """digits CNN at width 0.5, one epoch at a tiny learning rate, so the start shows: re-fitted to the teacher on
    the training data it agrees with it; as cut it does not."""
    pytest.importorskip("torch")
    teacher, data, val = (fixtures_dir / f"digits_cnn{suffix}" for suffix in (".onnx", "_calib.npz", "_val.npz"))
    agreement = {}
    for reconstruct in (True, False):
        report = distill(teacher, tmp_path / f"s{reconstruct}.onnx", data=data, val=val, width=0.5, epochs=1,
                         lr=1e-6, threads=1, reconstruct=reconstruct, gates={"min_top1": 0.0})  # fmt: skip
        assert report.exit_code == 0, report.message
        stats = report.steps[0].stats
        assert ("reconstructed" in stats["narrowed_by_prune"]) == reconstruct
        assert stats["student"].endswith("(structured prune, reconstructed)" if reconstruct else "(structured prune)")
        agreement[reconstruct] = stats["validation"]["top1_agreement"]
    assert agreement[True] > 0.8 and agreement[False] < 0.5, agreement
    result = run_cli("distill", teacher, "-o", tmp_path / "cli.onnx", "--data", data, "--val", val, "--width", "0.5",
                     "--epochs", "1", "--no-reconstruct", "--json", "--min-top1", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reconstructed" not in json.loads(result.stdout)["steps"][0]["stats"]["narrowed_by_prune"]


def test_an_onnx_students_batch_norm_trains_on_batch_statistics_unless_frozen(fixtures_dir, tmp_path, run_cli):
    """The teacher (BatchNormalization after each conv) as its own student at a tiny learning rate: normalized by
    batches of 4 it does not compute the teacher's outputs while it trains; with its running statistics frozen it
    does (loss ~0) — what kept a reconstructed PP-OCRv4 rec from falling to one class in its first epoch."""
    pytest.importorskip("torch")
    teacher, data = fixtures_dir / "digits_cnn.onnx", fixtures_dir / "digits_cnn_calib.npz"
    losses, hinted = {}, {}
    for mode in ("frozen", "train"):
        result = run_cli("distill", teacher, "-o", tmp_path / f"{mode}.onnx", "--data", data, "--epochs", "1",
                         "--lr", "1e-7", "--alpha", "1", "--batch-size", "4", "--threads", "1", "--batch-norm", mode,
                         "--json", "--min-top1", "0")  # fmt: skip
        assert result.returncode == 0, result.stderr
        losses[mode] = json.loads(result.stdout)["steps"][0]["stats"]["history"][0]["loss"]
        hinted[mode] = "--batch-norm frozen" in result.stderr  # where no epoch beat the start
    assert losses["frozen"] < 1e-4 < 0.01 < losses["train"], losses
    assert hinted == {"train": True, "frozen": False}


def test_without_val_the_verdict_runs_on_rows_held_out_of_the_training_data(fixtures_dir, tmp_path):
    """No --val: a tenth of --data is held out before the pass reads it (the student neither trains nor stops
    early on those rows), and the verdict runs on them; where a tenth is under 16 rows, the verdict runs on
    --data and the report says so."""
    pytest.importorskip("torch")
    rows = dict(np.load(fixtures_dir / "iris_mlp_calib.npz"))
    for count in (150, 160):
        data = tmp_path / f"rows{count}.npz"
        rng = np.random.default_rng(count)
        index = rng.integers(0, len(rows["input"]), count)
        jitter = rng.normal(0, 0.05, (count, 4)).astype(np.float32)
        np.savez(data, input=rows["input"][index] + jitter, labels=rows["labels"][index])
        report = distill(fixtures_dir / "iris_mlp.onnx", tmp_path / f"s{count}.onnx", data=data, epochs=1,
                         threads=1, gates={"min_top1": 0.0})  # fmt: skip
        assert report.final is not None and report.final.compared, report.message
        stats = report.steps[0].stats
        on_training_rows = any("judged on the data the model was retrained on" in note for note in report.notes)
        if count == 150:  # a tenth is 15 rows
            assert report.final.samples == 150 and on_training_rows
            assert "held out" not in report.final.data and stats["train_rows"] + stats["val_rows"] == 150
        else:
            assert report.final.samples == 16 and not on_training_rows
            assert f"rows{count}.npz, held out" in report.final.data and stats["train_rows"] + stats["val_rows"] == 144
            assert any("rows no pass read" in note for note in report.notes)
    folded = onnxopt.optimize(fixtures_dir / "iris_mlp.onnx", tmp_path / "f.onnx", passes=["fold"], data=data)
    assert folded.final.samples == 160  # a run that retrains nothing is judged on all of --data


def test_test_rows_judge_the_student_and_val_rows_judging_it_are_flagged(fixtures_dir, tmp_path, run_cli):
    """--val picks the best epoch; --test, when given, is what the verdict runs on, and the early-stopping rows
    stay --val's. Judged on --val itself (no --test, or the same file) the report says the figure flatters."""
    pytest.importorskip("torch")
    rows = dict(np.load(fixtures_dir / "iris_mlp_val.npz"))
    halves = {name: tmp_path / f"{name}.npz" for name in ("early", "final")}
    for path, part in zip(halves.values(), (slice(0, 15), slice(15, None))):
        np.savez(path, **{key: value[part] for key, value in rows.items()})
    flattered = "the rows that also chose the best epoch"
    for extra, judged, flagged in (((), "early.npz", True), (("--test", halves["final"]), "final.npz", False),
                                   (("--test", halves["early"]), "early.npz", True)):  # fmt: skip
        result = run_cli("distill", fixtures_dir / "iris_mlp.onnx", "-o", tmp_path / "s.onnx", "--data",
                         fixtures_dir / "iris_mlp_calib.npz", "--val", halves["early"], *extra, "--epochs", "2",
                         "--threads", "1", "--json", "--min-top1", "0")  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert judged in report["final"]["data"] and report["steps"][0]["stats"]["val_rows"] == 15, report["final"]
        assert any(flattered in note for note in report["notes"]) == flagged, report["notes"]


def test_training_is_deterministic_for_a_seed(fixtures_dir, tmp_path):
    torch = pytest.importorskip("torch")
    import onnx_ir as ir

    from onnxopt_plugins.distill.torch_trainer import OnnxModule, TorchStudent, train
    from onnxopt_plugins.distill.training import Hyperparameters, Split, TrainingJob

    data = np.load(fixtures_dir / "digits_cnn_calib.npz")
    teacher = ort.InferenceSession(str(fixtures_dir / "digits_cnn.onnx")).run(None, {"input": data["input"]})[0]
    states = []
    for _ in range(2):
        job = TrainingJob(
            ir.load(fixtures_dir / "digits_cnn.onnx"),
            Split({"input": data["input"]}, teacher * 2.0 + 1.0),  # a target it must train towards
            None,
            ["input"],
            ["logits"],
            0,
            False,
            Hyperparameters(epochs=2, seed=5, loss="mse"),
            tmp_path / "x.onnx",
        )
        student = TorchStudent(OnnxModule(job.student), job)
        result = train(job, student)
        states.append({k: v.clone() for k, v in student.module.state_dict().items()})
    assert result.epochs == 2 and states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    original = OnnxModule(ir.load(fixtures_dir / "digits_cnn.onnx")).state_dict()
    assert any(not torch.equal(original[k], states[0][k]) for k in original)  # it did train


def test_training_that_never_beats_the_student_as_given_hands_it_back(fixtures_dir, tmp_path):
    """The teacher as its own student, trained with a learning rate that wrecks it: no epoch beats epoch 0, so the
    weights it was given come back (a reconstructed student must not leave distill worse than it came)."""
    torch = pytest.importorskip("torch")
    import onnx_ir as ir

    from onnxopt_plugins.distill.torch_trainer import OnnxModule, TorchStudent, train
    from onnxopt_plugins.distill.training import Hyperparameters, Split, TrainingJob

    data = np.load(fixtures_dir / "digits_cnn_calib.npz")
    teacher = ort.InferenceSession(str(fixtures_dir / "digits_cnn.onnx")).run(None, {"input": data["input"]})[0]
    results = {}
    for lr in (5.0, 0.01):
        target = teacher if lr > 1 else teacher * 2.0 + 1.0  # the second: a target the student does not compute yet
        job = TrainingJob(ir.load(fixtures_dir / "digits_cnn.onnx"), Split({"input": data["input"]}, target), None,
                          ["input"], ["logits"], 0, False, Hyperparameters(epochs=3, lr=lr, loss="mse", patience=0),
                          tmp_path / "x.onnx")  # fmt: skip
        student = TorchStudent(OnnxModule(job.student), job)
        results[lr] = train(job, student)
        if lr > 1:
            original = OnnxModule(ir.load(fixtures_dir / "digits_cnn.onnx")).state_dict()
            assert all(torch.equal(original[k], v) for k, v in student.module.state_dict().items())
    wrecked, trained = results[5.0], results[0.01]
    assert wrecked.best_epoch == 0 and all(e["val_score"] < wrecked.best_score for e in wrecked.history)
    assert trained.best_epoch > 0 and trained.best_score > trained.history[0]["val_score"] - 1e-9


def test_mse_loss_moves_a_regression_style_student_towards_the_teacher_outputs(fixtures_dir, tmp_path):
    pytest.importorskip("torch")
    import onnx_ir as ir

    from onnxopt_plugins.distill.torch_trainer import OnnxModule, TorchStudent, train
    from onnxopt_plugins.distill.training import Hyperparameters, Split, TrainingJob

    data = np.load(fixtures_dir / "digits_cnn_calib.npz")
    teacher = ort.InferenceSession(str(fixtures_dir / "digits_cnn.onnx")).run(None, {"input": data["input"]})[0]
    rows = Split({"input": data["input"]}, teacher * 2.0 + 1.0)  # a target the student does not compute yet
    job = TrainingJob(
        ir.load(fixtures_dir / "digits_cnn.onnx"),
        rows,
        None,
        ["input"],
        ["logits"],
        0,
        False,
        Hyperparameters(epochs=30, lr=0.01, loss="mse", patience=0),
        tmp_path / "x.onnx",
    )
    result = train(job, TorchStudent(OnnxModule(job.student), job))
    first, best = -result.history[0]["val_score"], -result.best_score
    assert best < 0.5 * first, (first, best)  # the raw outputs, not just their argmax, moved


def test_user_onnx_student_pruned_digits_cnn_recovers_on_the_teacher(fixtures_dir, tmp_path):
    """A structured-pruned CNN (the user's ONNX student) retrained on the teacher gets closer to it."""
    pytest.importorskip("torch")
    pruned = tmp_path / "pruned.onnx"
    made = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", pruned, passes=[("prune-structured", {"sparsity": 0.5})],
                            gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    assert made.exit_code == 0, made.message
    val = fixtures_dir / "digits_cnn_val.npz"
    out = tmp_path / "student.onnx"
    report = distill(fixtures_dir / "digits_cnn.onnx", out, data=val, student=pruned, val_fraction=0.25,
                             epochs=15, lr=0.01, threads=1)  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[0].stats["student"] == "pruned.onnx"
    before, after = _accuracy(pruned, val), _accuracy(out, val)
    assert after > before + 0.05, (before, after)
    _student_ok(out, fixtures_dir / "digits_cnn.onnx", np.load(val)["input"])


STUDENT_MODULE = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3),
                               torch.nn.Softmax(-1))
"""


def test_import_path_torch_student_in_a_pipeline_then_quantized(fixtures_dir, tmp_path, run_cli):
    """--pass distill:student=file.py:build then quantize: the student goes on through the pipeline."""
    pytest.importorskip("torch")
    (tmp_path / "mystudent.py").write_text(STUDENT_MODULE)
    out = tmp_path / "q.onnx"
    result = run_cli(
        "optimize",
        fixtures_dir / "iris_mlp.onnx",
        "-o",
        out,
        "--data",
        fixtures_dir / "iris_mlp_calib.npz",
        "--pass",
        f"distill:student={tmp_path / 'mystudent.py'}:build,epochs=150,lr=0.03,batch_size=8,val_fraction=0,threads=1",
        "--pass",
        "quantize:mode=dynamic",
        "--min-cosine",
        "0",
        "--min-top1",
        "0.8",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["status"] for s in report["steps"]] == ["kept", "kept"]
    assert report["steps"][0]["stats"]["student_parameters"] <= 4 * 4 + 4 * 6 + 6 + 6 * 3 + 3  # BN folds or stays
    assert _accuracy(out, fixtures_dir / "iris_mlp_val.npz") >= 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--student", "no_such_module_xyz:build"], "no_such_module_xyz: no such module"),
        (["--width", "1.5"], "pass 'distill': width must be > 0, <= 1, got 1.5"),  # the range declared on the option
        (["--data", "synthetic:8"], "distill trains on real data"),
        (["--metric", "no_such_metric"], "unknown metric 'no_such_metric'"),
    ],
)
def test_user_mistakes_are_one_line_errors(fixtures_dir, tmp_path, run_cli, args, message):
    base = [
        "distill",
        fixtures_dir / "iris_mlp.onnx",
        "-o",
        tmp_path / "s.onnx",
        "--data",
        fixtures_dir / "iris_mlp_calib.npz",
    ]
    result = run_cli(*base, *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s.onnx").exists()


@pytest.mark.parametrize(("name", "refused", "accepted"), [
    ("width", 0.0, 1e-6), ("width", 1.000001, 1.0), ("depth", 0.0, 1e-6), ("depth", 1.000001, 1.0),
    ("epochs", 0, 1), ("batch_size", 0, 1), ("lr", 0.0, 1e-9), ("temperature", 0.0, 1e-6),
    ("alpha", -1e-9, 0.0), ("alpha", 1.000001, 1.0), ("val_fraction", -1e-9, 0.0), ("val_fraction", 1.0, 0.999),
    ("threads", -1, 0), ("patience", -1, 0), ("max_time", -0.001, 0.0),
])  # fmt: skip
def test_option_ranges_hold_on_both_sides_of_each_bound(name, refused, accepted):
    from onnxopt_plugins.distill import DistillOptions

    assert getattr(DistillOptions(**{name: accepted}), name) == accepted
    with pytest.raises(ValueError, match=f"^{name} must be "):
        DistillOptions(**{name: refused})


def test_backend_plugins_answer_the_trainer_hook_for_their_own_students(fixtures_dir, run_cli):
    """The hook distill declares (hookspecs.py) reaches both backends: torch takes an ONNX student under its name
    or auto, keras only a keras.Model (none here); with distill blocked both still load (optional hookimpls)."""
    pytest.importorskip("torch")
    from onnxopt.session import Session

    student = onnxopt.load(fixtures_dir / "iris_mlp.onnx")
    with Session().context() as context:
        ask = context.hook.onnxopt_distill_trainer
        assert ask(backend="auto", student=student).name == ask(backend="torch", student=student).name == "torch"
        assert ask(backend="keras", student=student) is None and ask(backend="auto", student=object()) is None
    blocked = run_cli("-p", "no:distill", "plugins")
    assert blocked.returncode == 0 and blocked.stderr == "", blocked.stderr
    assert "distill-torch" in blocked.stdout and "distill-keras" in blocked.stdout


@pytest.mark.parametrize(("options", "message"), [
    ({"backend": "jax"}, "no training backend 'jax'"),
    ({"student": "hardmax.onnx"}, "the ONNX student cannot be trained: op Hardmax"),
])  # fmt: skip
def test_students_no_backend_can_train_are_refused_and_nothing_is_written(fixtures_dir, tmp_path, options, message):
    if "student" in options:
        pytest.importorskip("torch")
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Hardmax", ["input"], ["probabilities"])],
            "g",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 4])],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / options["student"])
        options = {"student": tmp_path / options["student"]}
    out = tmp_path / "s.onnx"
    report = distill(fixtures_dir / "iris_mlp.onnx", out, data=fixtures_dir / "iris_mlp_calib.npz", **options)
    assert report.exit_code == 2 and message in report.message and report.output is None and not out.exists()


def test_a_student_that_does_not_agree_fails_the_default_verdict_and_a_gate_given_replaces_it(
    fixtures_dir, tmp_path, run_cli
):
    """A pipeline gates on the exit code: a half-width digits student trained for one epoch at a tiny rate agrees
    with the teacher on a fifth of the held-out rows and must not exit 0 (it did, with no gate given); a top-1 gate the
    user sets below what it reaches replaces the default and accepts it."""
    pytest.importorskip("torch")
    base = ["distill", fixtures_dir / "digits_cnn.onnx", "--data", fixtures_dir / "digits_cnn_calib.npz", "--val",
            fixtures_dir / "digits_cnn_val.npz", "--width", "0.5", "--epochs", "1", "--lr", "1e-5",
            "--threads", "1"]  # fmt: skip
    refused = run_cli(*base, "-o", tmp_path / "s.onnx", "--json")
    assert refused.returncode == 1, refused.stderr
    (top1,) = [c for c in json.loads(refused.stdout)["final"]["checks"] if c["name"] == "top1"]
    assert not top1["passed"] and top1["threshold"] == 0.9 and top1["value"] < 0.9
    accepted = run_cli(*base, "-o", tmp_path / "t.onnx", "--min-top1", str(top1["value"]))
    assert accepted.returncode == 0, accepted.stderr


def test_cli_time_budget_and_device(fixtures_dir, tmp_path, run_cli):
    """--max-time ends training early (the report says so, epoch by epoch); a device torch cannot see is a
    one-line error."""
    pytest.importorskip("torch")
    base = ["distill", fixtures_dir / "iris_mlp.onnx", "--data", fixtures_dir / "iris_mlp_calib.npz", "--threads", "1"]
    result = run_cli(*base, "-o", tmp_path / "s.onnx", "--epochs", "100000", "--max-time", "2", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)["steps"][0]["stats"]
    assert stats["epochs"] < 100000 and stats["train_seconds"] < 30 and stats["loss"] == "kl"
    history = stats["history"]  # per epoch, for a user asking why a run went flat
    assert len(history) == stats["epochs"] and history[-1]["stopped"] in ("time budget", "patience")
    assert {"loss", "val_score", "seconds"} <= set(history[0])
    import torch

    if not torch.cuda.is_available():
        result = run_cli(*base, "-o", tmp_path / "c.onnx", "--device", "cuda")
        assert (
            result.returncode == 2 and "torch sees no CUDA device" in result.stderr and "Traceback" not in result.stderr
        )
        assert not (tmp_path / "c.onnx").exists()


def test_cli_output_name_picks_the_output_distilled_on(fixtures_dir, tmp_path, run_cli):
    pytest.importorskip("torch")
    base = [
        "distill",
        fixtures_dir / "iris_mlp.onnx",
        "--data",
        fixtures_dir / "iris_mlp_calib.npz",
        "--epochs",
        "1",
        "--threads",
        "1",
    ]
    result = run_cli(*base, "-o", tmp_path / "s.onnx", "--output-name", "nope")
    assert result.returncode == 2 and "the teacher has no output 'nope'" in result.stderr, result.stderr
    result = run_cli(*base, "-o", tmp_path / "s.onnx", "--output-name", "probabilities")
    assert result.returncode == 0, result.stderr
