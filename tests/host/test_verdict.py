"""The verdict a pipeline gates on: never an unchecked OK, never a good model refused by a metric that does not fit.

Each failure issue 14 reported has a regression test here, on models built by fixtures/build_verdict_fixtures.py
or by onnx.helper below, run for real in onnxruntime.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from paths import FIXTURES

import onnxopt
from onnxopt.errors import EXIT_NOT_VALIDATED, UsageError

sys.path.insert(0, str(FIXTURES))
from build_verdict_fixtures import COLLAPSED, detector, negated, token_encoder  # noqa: E402


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:  # noqa: ANN001
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _softmax_model(scale: float, bias_at: int | None = None) -> onnx.ModelProto:
    """y = softmax(scale * x + bias) over the last axis of [batch, steps, 5]: per-step class probabilities."""
    bias = np.zeros(5, np.float32)
    if bias_at is not None:
        bias[bias_at] = 50.0  # one class wins every step: a recogniser reading garbage
    return _model(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"]), helper.make_node("Add", ["scaled", "bias"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12, 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 12, 5])],
        [numpy_helper.from_array(np.float32(scale), "scale"), numpy_helper.from_array(bias, "bias")],
    )  # fmt: skip


# --------------------------------------------------------------------------- no unchecked OK


def _multiple_of_eleven(path: Path) -> Path:
    """Runs only when its symbolic dim is a multiple of 11: no size the synthetic trials try."""
    return _save(_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [11, None])],
        [numpy_helper.from_array(np.array([11, -1], np.int64), "shape")],
    ), path)  # fmt: skip


def test_no_runnable_inputs_means_not_validated_with_its_own_exit_code(tmp_path, run_cli):
    model = _multiple_of_eleven(tmp_path / "eleven.onnx")
    run = run_cli("optimize", model, "-o", tmp_path / "out.onnx", "--pass", "fold")
    assert run.returncode == EXIT_NOT_VALIDATED, run.stdout + run.stderr
    assert "NOT VALIDATED" in run.stdout and "OK" not in run.stdout.splitlines()[-1]
    assert "--shape" in run.stderr and "--data" in run.stderr  # says what to pass
    assert (tmp_path / "out.onnx").exists()
    # told the shape, it compares and says OK
    run = run_cli("optimize", model, "-o", tmp_path / "out.onnx", "--pass", "fold", "--shape", "x=1x22")
    assert run.returncode == 0, run.stderr
    assert "x [1, 22] float32" in run.stdout


def test_validate_without_runnable_inputs_exits_not_validated(tmp_path, run_cli):
    model = _multiple_of_eleven(tmp_path / "eleven.onnx")
    run = run_cli("validate", model, model, "--latency-runs", "0")
    assert run.returncode == EXIT_NOT_VALIDATED and "not validated" in run.stderr


def test_no_validate_flag_writes_but_never_says_ok(tmp_path, run_cli, fixtures_dir):
    run = run_cli(
        "optimize", fixtures_dir / "digits_cnn.onnx", "-o", tmp_path / "out.onnx", "--pass", "fold", "--no-validate"
    )
    assert run.returncode == EXIT_NOT_VALIDATED
    assert run.stdout.splitlines()[-1].startswith("NOT VALIDATED") and "--no-validate" in run.stdout
    assert (tmp_path / "out.onnx").exists()


def test_symbolic_image_dims_are_derived_and_reported(tmp_path):
    # MaxPool 32x32 needs height and width of at least 32: derived, not asked for
    model = _save(_model(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[32, 32], strides=[32, 32])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, None, None])],
    ), tmp_path / "pool.onnx")  # fmt: skip
    report = onnxopt.optimize(model, tmp_path / "out.onnx", passes=["fold"], latency_runs=0)
    assert report.exit_code == 0 and report.final.compared
    assert report.final.data_description == "x [1, 3, 224, 224] float32 standard normal"


def test_token_ids_stay_inside_the_embedding_table(tmp_path):
    model = _save(token_encoder(), tmp_path / "enc.onnx")
    result = onnxopt.validate(model, model, latency_runs=0)
    assert result.compared and result.passed
    assert "input_ids [1, 16] int64 ids in [0, 50)" in result.data_description
    assert "attention_mask [1, 16] int64 ones" in result.data_description


def test_a_pruned_cnn_without_data_is_rolled_back_not_shipped(tmp_path, fixtures_dir):
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "out.onnx",
                              passes=["fold", "prune-structured:sparsity=0.5"], latency_runs=0)  # fmt: skip
    assert report.exit_code == 1
    assert [s.status for s in report.steps] == ["kept", "rolled back"]
    assert report.contents().startswith("contains fold; prune") and report.contents().endswith("rolled back")
    assert "try judge on real inputs (--val)" in report.steps[1].message


# --------------------------------------------------------------------------- gates that see what is deployed


def test_a_collapsed_class_row_fails_the_default_verdict_under_cosine_0_9999(tmp_path):
    reference = _save(detector(), tmp_path / "det.onnx")
    collapsed = _save(detector(COLLAPSED), tmp_path / "collapsed.onnx")
    result = onnxopt.validate(reference, collapsed, latency_runs=0)
    out = result.outputs[0]
    assert out.cosine > 0.9999 and out.worst_channel in [4 + c for c in COLLAPSED] and out.worst_channel_cosine == 0
    assert not result.passed and "worst channel" in result.failure_reason()
    assert onnxopt.validate(reference, reference, latency_runs=0).passed
    # a user who deploys only the boxes can say so; the channel gate is the user's to lower
    assert onnxopt.validate(reference, collapsed, gates={"min_channel_cosine": 0}, latency_runs=0).passed


def _mask_data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(8, 6)).astype(np.int64)
    mask = np.ones((8, 6), np.int64)
    mask[:, 4:] = 0  # two padded positions per sentence
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path


def test_padded_positions_are_not_compared(tmp_path):
    reference = _save(token_encoder(), tmp_path / "enc.onnx")
    padding_changed = _save(token_encoder("padding"), tmp_path / "pad.onnx")
    broken = _save(token_encoder("all"), tmp_path / "broken.onnx")
    data = _mask_data(tmp_path / "tokens.npz")
    report = onnxopt.optimize(reference, tmp_path / "out.onnx", passes=["fold"], val=data, latency_runs=0)  # a Path
    assert report.exit_code == 0 and report.final.data == str(data)
    result = onnxopt.validate(reference, padding_changed, data=data, latency_runs=0, gates={"atol": 0})
    assert result.passed, result.failure_reason()
    assert result.outputs[0].cosine == 1.0 and result.outputs[0].masked_positions == 16
    assert [(m.metric, m.default) for m in result.metrics] == [("embedding", True)]
    assert not onnxopt.validate(reference, broken, data=data, latency_runs=0).passed


def test_a_task_metric_replaces_the_cosine_that_does_not_fit(tmp_path):
    """A softer softmax changes every probability (cosine < 0.99) but no decoded sequence."""
    reference = _save(_softmax_model(3.0), tmp_path / "ref.onnx")
    softer = _save(_softmax_model(1.0), tmp_path / "soft.onnx")
    garbage = _save(_softmax_model(3.0, bias_at=2), tmp_path / "garbage.onnx")
    result = onnxopt.validate(reference, softer, latency_runs=0)
    assert result.outputs[0].cosine < 0.99 and result.passed, result.failure_reason()
    assert [(m.metric, m.value) for m in result.metrics] == [("ctc", 1.0)]
    # the generic default would have refused it: the metric is what accepted it
    assert not onnxopt.validate(reference, softer, metrics=["none"], latency_runs=0).passed
    wrong = onnxopt.validate(reference, garbage, latency_runs=0)
    failed = [c.message for c in wrong.checks if not c.passed]
    assert any("ctc (default for this output) 0 < 0.9" in m for m in failed), failed


def test_metric_thresholds_both_sides_and_bad_requests(tmp_path):
    reference = _save(_softmax_model(3.0), tmp_path / "ref.onnx")
    softer = _save(_softmax_model(1.0), tmp_path / "soft.onnx")
    assert onnxopt.validate(reference, softer, metrics=["probs=ctc>=1.0"], latency_runs=0).passed
    cosine = onnxopt.validate(reference, softer, metrics=["none"], latency_runs=0, defaults=False).outputs[0].cosine
    assert not onnxopt.validate(reference, softer, gates={"min_cosine": cosine + 1e-6}, latency_runs=0).passed
    assert onnxopt.validate(reference, softer, gates={"min_cosine": cosine - 1e-6}, latency_runs=0).passed
    with pytest.raises(UsageError, match="unknown metric 'nope'"):
        onnxopt.validate(reference, softer, metrics=["nope"], latency_runs=0)
    with pytest.raises(UsageError, match="no output 'logits'"):
        onnxopt.validate(reference, softer, metrics=["logits=ctc"], latency_runs=0)


def test_a_metric_asked_for_an_output_it_does_not_fit_is_a_usage_error(fixtures_dir):
    digits = fixtures_dir / "digits_cnn.onnx"
    with pytest.raises(UsageError, match="'ctc' does not apply to output 'logits'"):
        onnxopt.validate(digits, digits, metrics=["logits=ctc"], latency_runs=0)


def test_a_user_metric_from_a_file_gates_both_sides(tmp_path, run_cli):
    reference = _save(detector(), tmp_path / "det.onnx")
    collapsed = _save(detector(COLLAPSED), tmp_path / "collapsed.onnx")
    (tmp_path / "my_metric.py").write_text(
        "import numpy as np\n"
        "def scores_kept(reference, candidate, feed):\n"
        "    return float(np.mean(np.abs(candidate[:, 4:] - reference[:, 4:]) < 0.5))\n"
    )
    metric = f"{tmp_path / 'my_metric.py'}:scores_kept"
    ok = run_cli("validate", reference, reference, "--metric", f"{metric}>=0.99", "--latency-runs", "0")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("validate", reference, collapsed, "--metric", f"{metric}>=0.99", "--min-channel-cosine", "0",
                  "--latency-runs", "0")  # fmt: skip
    assert bad.returncode == 1 and "scores_kept" in bad.stderr
    missing = run_cli("validate", reference, reference, "--metric", f"{tmp_path / 'nope.py'}:f")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


# --------------------------------------------------------------------------- figures and messages


def test_accuracy_drop_gate_both_sides(tmp_path, fixtures_dir):
    """Negated logits lose nearly all accuracy: a 0.01 budget must refuse them, a budget of 1.0 accept them."""
    model = fixtures_dir / "digits_cnn.onnx"
    data = fixtures_dir / "digits_cnn_val.npz"
    flipped = negated(model, tmp_path / "neg.onnx")
    loose = {"max_accuracy_drop": 1.0, "min_cosine": -1, "min_channel_cosine": -1}
    accepted = onnxopt.validate(model, flipped, data=data, gates=loose, latency_runs=0)
    assert accepted.passed and accepted.accuracy_reference - accepted.accuracy_candidate > 0.5
    refused = onnxopt.validate(model, flipped, data=data, gates={**loose, "max_accuracy_drop": 0.01}, latency_runs=0)
    assert [c.name for c in refused.checks if not c.passed] == ["accuracy"]


def test_a_written_model_failing_the_final_gate_exits_1(tmp_path, fixtures_dir, run_cli):
    run = run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", tmp_path / "out.onnx", "--pass", "fold",
                  "--data", fixtures_dir / "digits_cnn_val.npz", "--max-latency-ratio", "0.01",
                  "--latency-runs", "3")  # fmt: skip
    assert run.returncode == 1 and "the written model fails validation: latency ratio" in run.stderr


def test_an_onnxruntime_error_is_reported_whole_on_one_line(tmp_path):
    """A candidate fixed to batch 1 fed batch 8: the message keeps onnxruntime's "Expected" part."""
    reference = _save(detector(), tmp_path / "det.onnx")
    fixed = detector()
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed_path = _save(fixed, tmp_path / "fixed.onnx")
    data = tmp_path / "x.npz"
    np.savez(data, x=np.zeros((8, 3, 16, 16), np.float32))
    result = onnxopt.validate(reference, fixed_path, data=data, latency_runs=0)
    message = result.failure_reason()
    assert "Expected: 1" in message and "\n" not in message


def test_a_third_party_metric_plugin_gates_like_a_built_in(tmp_path, run_cli, monkeypatch, fixtures_dir):
    monkeypatch.setenv("PYTHONPATH", str(fixtures_dir.parent / "examples" / "metric-plugin"))
    args = [
        "--metric",
        "scores_kept>=0.99",
        "--min-channel-cosine",
        "0",
        "--latency-runs",
        "0",
        "-p",
        "onnxopt_box_metric",
    ]
    kept = run_cli("validate", fixtures_dir / "detector.onnx", fixtures_dir / "detector.onnx", *args)
    assert kept.returncode == 0, kept.stderr
    lost = run_cli("validate", fixtures_dir / "detector.onnx", fixtures_dir / "detector_collapsed.onnx", *args)
    assert lost.returncode == 1 and "scores_kept (asked for)" in lost.stderr


def test_a_token_axis_that_changes_length_between_feeds_is_compared(tmp_path):
    """Text padded to each batch's longest sentence: the per-position channels differ in number between feeds."""
    model = _save(token_encoder(), tmp_path / "enc.onnx")
    (tmp_path / "feeds.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    for length in (3, 7, 5):\n"
        "        mask = np.ones((2, length), np.int64); mask[0, -1] = 0\n"
        "        yield {'input_ids': np.arange(2 * length, dtype=np.int64).reshape(2, length) % 50, "
        "'attention_mask': mask}\n"
    )
    result = onnxopt.validate(model, model, data=f"{tmp_path / 'feeds.py'}:load", latency_runs=0)
    assert result.passed and result.compared and result.samples == 6, result.failure_reason()
    assert result.outputs[0].masked_positions == 3


def test_the_reference_runs_once_per_feed_for_every_pass_and_the_final_check(tmp_path, fixtures_dir):
    from onnxopt.pipeline import Run
    from onnxopt.recipe import Recipe, pass_steps
    from onnxopt.session import Session

    recipe = Recipe(passes=pass_steps(["fold", "fold"]), data=str(fixtures_dir / "digits_cnn_val.npz"), latency_runs=0,
                    batch_size=100)  # fmt: skip
    run = Run(recipe, Session())
    report = run(fixtures_dir / "digits_cnn.onnx", tmp_path / "out.onnx")
    assert report.exit_code == 0 and [s.status for s in report.steps] == ["kept", "unchanged"]
    assert run.reference.runs == 4  # 400 rows in feeds of 100, run once, though compared after fold and at the end


def test_a_run_spills_reference_outputs_past_the_budget_instead_of_running_the_reference_again(
    tmp_path, fixtures_dir, monkeypatch
):
    """Three comparisons (fold, prune, the written external-data file judged anew) with no memory budget at all:
    the reference still runs once per feed."""
    from onnxopt import validation
    from onnxopt.pipeline import Run
    from onnxopt.recipe import Recipe, pass_steps
    from onnxopt.session import Session

    monkeypatch.setattr(validation, "REFERENCE_CACHE_BYTES", 0)
    recipe = Recipe(passes=pass_steps(["fold", "prune:sparsity=0.05"]), data=str(fixtures_dir / "digits_cnn_val.npz"),
                    latency_runs=0, batch_size=100, external_data=True)  # fmt: skip
    run = Run(recipe, Session())
    report = run(fixtures_dir / "digits_cnn.onnx", tmp_path / "out.onnx")
    assert report.exit_code == 0 and [s.status for s in report.steps] == ["kept", "kept"], report.message
    assert run.reference.runs == 4


def test_an_unknown_metric_fails_before_any_pass_runs(tmp_path, fixtures_dir, run_cli):
    out = tmp_path / "out.onnx"
    run = run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", out, "--pass", "fold", "--metric", "nope")
    assert run.returncode == 2 and "unknown metric 'nope'" in run.stderr and run.stdout == "" and not out.exists()


@pytest.mark.parametrize(("spill", "runs"), [(True, 1), (False, 3)])
def test_reference_outputs_past_the_memory_budget_are_read_back_from_disk(
    tmp_path, fixtures_dir, monkeypatch, spill, runs
):
    """Past the in-memory budget the reference's outputs go to .npy files and come back equal, memory-mapped;
    without a folder to spill to, they are computed again each time they are asked for."""
    from onnxopt import validation

    monkeypatch.setattr(validation, "REFERENCE_CACHE_BYTES", 0)
    path = fixtures_dir / "digits_cnn.onnx"
    folder = tmp_path / "spill"
    reference = validation.LiveReference(path, spill_to=folder if spill else None)
    feed = {"input": np.load(fixtures_dir / "digits_cnn_val.npz")["input"][:50]}
    first = reference.outputs(0, feed)
    again = [reference.outputs(0, {"input": feed["input"].copy()}) for _ in range(2)]
    assert reference.runs == runs
    assert all(np.array_equal(first[0], outputs[0]) for outputs in again)
    assert [p.suffix for p in folder.iterdir()] == [".npy"] if spill else not folder.exists()


@pytest.mark.parametrize("budget", [256 << 20, 0])
def test_recorded_reference_outputs_close_the_session_only_when_all_are_kept(fixtures_dir, monkeypatch, budget):
    """record() keeps the outputs on the run's data and closes the session (its copy of the weights) when every
    one is kept; a feed the cache cannot hold (no room, nowhere to spill) keeps the session open. Asking again
    for a kept feed runs nothing; a new feed reopens the session."""
    from onnxopt import model_io, validation
    from onnxopt.data import from_arrays

    monkeypatch.setattr(validation, "REFERENCE_CACHE_BYTES", budget)
    path = fixtures_dir / "digits_cnn.onnx"
    arrays = {"input": np.load(fixtures_dir / "digits_cnn_val.npz")["input"][:60]}
    data = from_arrays("val", arrays, model_io.load(path), batch_size=20)
    reference = validation.LiveReference(path)
    reference.record(data)
    assert reference.runs == 3
    assert (reference._session is None) == (budget > 0)
    first = next(iter(data.feeds()))
    reference.outputs(0, first)
    assert reference.runs == (3 if budget else 4)
    reference.outputs(0, {"input": first["input"][:5]})
    assert reference._session is not None


# --------------------------------------------------------------------------- retrained models (distilled students)


def _class_scores(path: Path, shift: list[float]) -> Path:
    """y = x + shift on [batch, 4] class scores."""
    return _save(_model(
        [helper.make_node("Add", ["x", "shift"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array(shift, np.float32), "shift")],
    ), path)  # fmt: skip


def _close_calls(path: Path) -> Path:
    """Ten rows whose class 0 wins; class 3 trails it by 0.1 on one row, by 0.2 on one, by 1 on the rest."""
    x = np.zeros((10, 4), np.float32)
    x[:, 0], x[:, 3] = 2.0, 1.0
    x[0, 3], x[1, 3] = 1.9, 1.8
    np.savez(path, x=x)
    return path


@pytest.mark.parametrize(("bump", "agreement", "ok"), [(0.15, 0.9, True), (0.25, 0.8, False)])
def test_a_retrained_classifier_is_judged_by_top1_agreement_both_sides(tmp_path, bump, agreement, ok):
    """A student agreeing on 9 of 10 rows meets the retrained default (top-1 >= 0.9); on 8 of 10 it does not."""
    reference = _class_scores(tmp_path / "ref.onnx", [0, 0, 0, 0])
    student = _class_scores(tmp_path / "student.onnx", [0, 0, 0, bump])
    data = _close_calls(tmp_path / "x.npz")
    result = onnxopt.validate(reference, student, data=data, latency_runs=0, retrained=True)
    (top1,) = [c for c in result.checks if c.name == "top1"]
    assert top1.value == pytest.approx(agreement) and top1.threshold == 0.9
    assert result.passed is ok and top1.passed is ok


@pytest.mark.parametrize(("declared", "judged_by", "ok"), [(False, "top1", True), (True, "cosine", False)])
def test_an_output_its_pass_declares_not_class_scores_is_judged_by_cosine(tmp_path, declared, judged_by, ok):
    """[batch, 4] values moved by a constant: as class scores (top-1) a good student; declared not class scores (an
    embedding distill trained as one, RunContext.not_class_scores), judged by the 0.9 cosine floor, which they fail."""
    import onnx_ir as ir

    from onnxopt.gates import RETRAINED
    from onnxopt.validation import compare

    reference = _class_scores(tmp_path / "ref.onnx", [0, 0, 0, 0])
    student = _class_scores(tmp_path / "student.onnx", [-10, -10, -10, -10])
    data = onnxopt.from_arrays("rows", dict(np.load(_close_calls(tmp_path / "x.npz"))), ir.load(reference))
    defaults = dataclasses.replace(RETRAINED, not_class_scores=frozenset({"y"} if declared else ()))
    result = compare(reference, student, data, None, defaults=defaults, latency_runs=0)
    assert [(c.name, c.threshold) for c in result.checks if c.threshold is not None] == [(judged_by, 0.9)]
    assert result.passed is ok


def test_shifted_logits_are_a_good_student_but_not_the_same_model(tmp_path, run_cli):
    """Logits moved by a constant (what KL training leaves free) keep every arg-max but not the cosine: the default
    for a retrained model accepts them, the default for the same model refuses them."""
    reference = _class_scores(tmp_path / "ref.onnx", [0, 0, 0, 0])
    student = _class_scores(tmp_path / "student.onnx", [-10, -10, -10, -10])
    data = _close_calls(tmp_path / "x.npz")
    same = run_cli("validate", reference, student, "--data", data, "--latency-runs", "0")
    retrained = run_cli("validate", reference, student, "--data", data, "--latency-runs", "0", "--retrained")
    assert same.returncode == 1 and "cosine" in same.stderr
    assert retrained.returncode == 0, retrained.stderr
    assert "top-1 agreement 1 >= 0.9" in retrained.stdout and "cosine" not in retrained.stdout.split("[pass]", 1)[1]


def test_a_pruned_then_distilled_pipeline_judges_the_student_not_the_pruned_step(tmp_path, fixtures_dir):
    """Before the retraining pass, the pruned model is a starting point, not judged on its own; the student is
    judged by agreement (it passes at 30 epochs where the 0.99 cosine would refuse it); distilled too briefly it
    fails, is rolled back, and the pruned model left behind is caught by the final verdict."""
    pytest.importorskip("torch")
    model, calib, val = (fixtures_dir / f"digits_cnn{s}" for s in (".onnx", "_calib.npz", "_val.npz"))
    passes = ["prune-structured:sparsity=0.5", "distill:threads=1"]
    good = onnxopt.optimize(model, tmp_path / "good.onnx", passes=passes, data=calib, val=val, latency_runs=0)
    assert good.exit_code == 0, good.message
    assert [s.validation for s in good.steps][0] is None and good.steps[1].validation.passed
    assert good.final.worst_cosine < 0.99 and good.final.outputs[0].top1_agreement >= 0.9
    assert any("not judged on its own" in note for note in good.notes)
    assert any("judged as a retrained model" in note for note in good.notes)
    brief = onnxopt.optimize(model, tmp_path / "brief.onnx", passes=[passes[0], "distill:threads=1,epochs=1,lr=1e-5"],
                             data=calib, val=val, latency_runs=0)  # fmt: skip
    assert brief.exit_code == 1 and [s.status for s in brief.steps] == ["kept", "rolled back"]
    assert "top-1 agreement" in brief.steps[1].message and brief.final.checks
    assert not brief.final.passed and {c.name for c in brief.final.checks if not c.passed} >= {"cosine"}


def test_advice_suggests_a_metric_only_for_outputs_no_metric_judges():
    """A text mask judged by mask_iou that also fails the cosine floor under it gets no "judge it by its metric"
    tip (it is judged by one); an output only the cosine judged does."""
    from onnxopt.pipeline import advice
    from onnxopt.validation import Check, ValidationResult

    checks = [
        Check("cosine", False, "output 'mask': cosine 0.48 < 0.9"),
        Check("metric:mask_iou", False, "output 'mask': mask_iou (default for this output) 0.66 < 0.85"),
    ]
    verdict = ValidationResult("a.onnx", "b.onnx", "val.npz", False, 16, checks=checks)
    assert "--metric" not in advice(verdict) and "'onnxopt passes'" in advice(verdict)
    verdict.checks.append(Check("cosine", False, "output 'scores': cosine 0.5 < 0.99"))
    assert "if output 'scores' serves a task, judge it by its metric" in advice(verdict)


class _Retrainer:
    """A pass that says it retrains (as distill does) and leaves the model as it is, noting how many rows it read."""

    def __init__(self, retrains: bool) -> None:
        self.retrains, self.seen = retrains, []

    @onnxopt.hookimpl
    def onnxopt_register_passes(self, register):
        import onnx_ir as ir

        def create(options, context):
            seen = self.seen

            class Read(ir.passes.InPlacePass):
                def call(self, model):
                    seen.append(context.dataset.num_samples)
                    return ir.passes.PassResult(model, modified=True)  # kept: a retrained model is judged as one

            return Read()

        register(onnxopt.PassSpec(name="retrainer", summary="reads its data", create=create,
                                  retrains=self.retrains))  # fmt: skip


@pytest.mark.parametrize(("rows", "retrains", "val", "passes", "judged"),
                         [(400, True, False, 360, 40), (150, True, False, 150, 150), (400, True, True, 400, 400),
                          (400, False, False, 400, 400), (160, True, False, 144, 16)])  # fmt: skip
def test_a_retraining_run_is_judged_on_rows_held_out_of_what_its_pass_reads(tmp_path, rows, retrains, val, passes,
                                                                           judged):  # fmt: skip
    """A tenth of --data, when that is 16 rows or more, is held out of a retraining pass's data and judges it; not
    with --val, nor for a pass that does not retrain."""
    from onnxopt.pipeline import Run
    from onnxopt.recipe import PassStep, Recipe
    from onnxopt.session import Session

    data = tmp_path / "data.npz"
    np.savez(data, input=np.load(FIXTURES / "digits_cnn_val.npz")["input"][:rows])
    plugin, session = _Retrainer(retrains), Session()
    session.plugin_manager.register(plugin, name="retrainer")
    recipe = Recipe(passes=[PassStep("retrainer")], data=str(data), val=str(data) if val else None, latency_runs=0)
    report = Run(recipe, session)(FIXTURES / "digits_cnn.onnx", tmp_path / "out.onnx")
    assert report.exit_code == 0, report.message
    assert plugin.seen == [passes] and report.final.samples == judged
    held = passes + judged == rows
    assert ("held out" in report.final.data) is held
    assert any("rows no pass read" in note for note in report.notes) is held
    on_training_rows = any("judged on the data the model was retrained on" in n for n in report.notes)
    assert on_training_rows is (retrains and not held and not val)


def test_a_retraining_run_without_validation_holds_nothing_out(tmp_path):
    from onnxopt.pipeline import Run
    from onnxopt.recipe import PassStep, Recipe
    from onnxopt.session import Session

    plugin, session = _Retrainer(True), Session()
    session.plugin_manager.register(plugin, name="retrainer")
    recipe = Recipe(passes=[PassStep("retrainer")], data=str(FIXTURES / "digits_cnn_val.npz"), validate=False)
    report = Run(recipe, session)(FIXTURES / "digits_cnn.onnx", tmp_path / "out.onnx")
    assert plugin.seen == [400] and report.exit_code == EXIT_NOT_VALIDATED, report.message
