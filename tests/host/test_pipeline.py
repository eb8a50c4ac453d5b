"""The pipeline through the Python API: faulty passes are caught, named, rolled back or stop the run."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from paths import TESTS

import onnxopt
from onnxopt.errors import UsageError

sys.path.insert(0, str(TESTS))  # makes -p faulty_plugins importable in this process


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _predict(path: Path, data: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.load(data)["input"]})[0]


@pytest.fixture
def digits(fixtures_dir: Path, tmp_path: Path) -> dict[str, Path]:
    return {
        "model": fixtures_dir / "digits_cnn.onnx",
        "data": fixtures_dir / "digits_cnn_val.npz",
        "out": tmp_path / "out.onnx",
    }


@pytest.mark.parametrize(
    ("fault", "exit_code", "words"),
    [
        ("fault-raise", 3, "raised RuntimeError: deliberate failure"),
        ("fault-result", 3, "PassResult"),
        ("fault-checker", 3, "invalid model"),
        ("fault-ort", 3, "onnxruntime cannot load"),
        ("fault-negate", 1, "cosine"),
    ],
)
def test_faulty_pass_is_rolled_back_and_named(digits, fault, exit_code, words):
    before = _digest(digits["model"])
    report = onnxopt.optimize(
        digits["model"], digits["out"], passes=[fault, "fold"], data=digits["data"], plugins=["faulty_plugins"]
    )
    assert report.exit_code == exit_code
    assert fault in report.message and "faulty_plugins" in report.message and words in report.message
    failed, fold = report.steps
    assert failed.status == "rolled back" and words in failed.message
    assert fold.status == "kept"  # the run went on from the previous model
    assert _digest(digits["model"]) == before
    # the best model so far was written, and it is the folded original, not the broken one
    np.testing.assert_allclose(
        _predict(digits["out"], digits["data"]), _predict(digits["model"], digits["data"]), atol=1e-4
    )
    assert report.final is not None and report.final.passed


@pytest.mark.parametrize(("fault", "exit_code"), [("fault-negate", 1), ("fault-raise", 3), ("fault-ort", 3)])
def test_on_failure_stop_skips_later_passes(digits, fault, exit_code):
    report = onnxopt.optimize(
        digits["model"], digits["out"], passes=[fault, "fold"], data=digits["data"],
        plugins=["faulty_plugins"], on_failure="stop",
    )  # fmt: skip
    assert report.exit_code == exit_code
    assert [s.status for s in report.steps] == ["failed", "not run"]
    assert digits["out"].exists()  # the best model so far (the original) is never lost
    np.testing.assert_array_equal(_predict(digits["out"], digits["data"]), _predict(digits["model"], digits["data"]))


def test_lowered_gate_accepts_what_the_default_refuses(digits):
    report = onnxopt.optimize(
        digits["model"], digits["out"], passes=["fault-negate"], data=digits["data"],
        plugins=["faulty_plugins"], gates={"min_cosine": -1.0, "min_channel_cosine": -1.0},
    )  # fmt: skip
    assert report.steps[0].status == "kept"
    assert report.exit_code == 0
    np.testing.assert_allclose(
        _predict(digits["out"], digits["data"]), -_predict(digits["model"], digits["data"]), atol=1e-5
    )


def test_wrapper_hook_sees_every_pass_and_can_annotate(digits):
    import faulty_plugins

    faulty_plugins.RUNS.clear()
    report = onnxopt.optimize(
        digits["model"], digits["out"], passes=["fold"], data=digits["data"], plugins=["faulty_plugins"]
    )
    assert faulty_plugins.RUNS == ["fold"]
    assert report.steps[0].stats["wrapped"] is True


def test_unknown_pass_and_option_fail_before_any_work(digits):
    with pytest.raises(UsageError, match="unknown pass 'nope'.*installed passes: .*fold"):
        onnxopt.optimize(digits["model"], digits["out"], passes=["fold", "nope"])
    with pytest.raises(UsageError, match="no option 'colour'"):
        onnxopt.optimize(digits["model"], digits["out"], passes=[("fold", {"colour": "red"})])
    assert not digits["out"].exists()


def test_recipe_file_gives_the_same_run_as_arguments(digits, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'data = "{digits["data"]}"\n'
        "[gates]\nmax_accuracy_drop = 0.0\n"
        '[[passes]]\nname = "fold"\nfuse_batchnorm = false\n'
    )
    from_recipe = onnxopt.optimize(digits["model"], tmp_path / "a.onnx", recipe=recipe)
    from_args = onnxopt.optimize(
        digits["model"], tmp_path / "b.onnx", passes=[("fold", {"fuse_batchnorm": False})],
        data=digits["data"], gates={"max_accuracy_drop": 0.0},
    )  # fmt: skip
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    for report in (from_recipe, from_args):
        assert report.exit_code == 0
        assert report.steps[0].name == "fold:fuse_batchnorm=False"
        assert "batchnorm_fused" not in report.steps[0].stats
        assert any(check.name == "accuracy" and check.passed for check in report.final.checks)


def test_report_records_per_pass_figures(digits):
    report = onnxopt.optimize(digits["model"], digits["out"], passes=["fold"], data=digits["data"])
    step = report.steps[0]
    assert step.modified and step.seconds > 0
    assert step.figures.nodes < report.original.nodes
    assert step.figures.bytes <= report.original.bytes
    assert step.figures.parameters < report.original.parameters  # BatchNorm parameters folded away
    assert step.validation.passed and step.validation.outputs[0].max_abs < 1e-4
    assert report.final.accuracy_candidate == report.final.accuracy_reference
    assert report.final.latency_ratio is not None and report.final.size_ratio < 1.0
    as_dict = report.to_dict()
    assert as_dict["ok"] is True and as_dict["steps"][0]["stats"]["batchnorm_fused"] == 2


def test_needs_data_pass_without_data_is_a_usage_error(digits):
    from onnxopt.passes import PassSpec
    from onnxopt.pipeline import Run
    from onnxopt.recipe import PassStep, Recipe
    from onnxopt.session import Session

    session = Session()

    class NeedsData:
        @onnxopt.hookimpl
        def onnxopt_register_passes(self, register):
            register(PassSpec(name="calibrated", summary="needs data", create=lambda o, c: None, needs_data=True))

    session.plugin_manager.register(NeedsData(), name="needs-data")
    with pytest.raises(UsageError, match="needs data"):
        Run(Recipe(passes=[PassStep("calibrated")]), session)


@pytest.mark.parametrize(("fault", "exit_code"), [("fault-raise", 3), ("fault-checker", 3), ("fault-negate", 1)])
def test_cli_exit_code_says_plugin_failure_or_gate(digits, run_cli, fault, exit_code):
    """Through the command line a release pipeline sees 3 for a broken plugin, 1 for a gate, and the plugin's name."""
    result = run_cli("optimize", digits["model"], "-o", digits["out"], "--pass", fault, "--data", digits["data"],
                     "-p", "faulty_plugins", cwd=TESTS)  # fmt: skip
    assert result.returncode == exit_code, result.stderr
    assert fault in result.stderr and "faulty_plugins" in result.stderr
    assert digits["out"].exists()  # the previous (original) model is written, never nothing


def _phase_counts(report) -> dict[str, int]:
    return {phase.name: phase.count for phase in report.costs}


def test_written_file_is_the_validated_candidate_judged_without_a_second_session_or_pass(digits, tmp_path):
    """The output is a byte copy of the staged, compared candidate: its verdict reuses that comparison's outputs
    and session (latency timed on it), so one candidate session and one pass over the data serve the whole run.
    Written with external data, the files are not the staged one's bytes, and the final verdict runs them itself."""
    copied = onnxopt.optimize(digits["model"], digits["out"], passes=["fold"], data=digits["data"], latency_runs=5)
    assert copied.exit_code == 0, copied.message
    counts = _phase_counts(copied)
    feeds = counts["reference runs"]  # one comparison: the reference is asked once per feed
    assert counts["onnxruntime session (candidate)"] == 1 and counts["candidate runs"] == feeds > 1
    final = copied.final
    assert final.compared and final.candidate == str(digits["out"]) and final.latency_rounds >= 1
    assert final.size_candidate == digits["out"].stat().st_size
    assert np.allclose(_predict(digits["out"], digits["data"]), _predict(digits["model"], digits["data"]), atol=1e-4)

    external = tmp_path / "external.onnx"
    anew = onnxopt.optimize(
        digits["model"], external, passes=["fold"], data=digits["data"], latency_runs=2, external_data=True
    )
    assert anew.exit_code == 0 and anew.final.compared, anew.message
    counts = _phase_counts(anew)
    assert counts["onnxruntime session (candidate)"] == 2 and counts["candidate runs"] == 2 * feeds
    assert external.with_name("external.onnx.data").is_file()


def test_a_later_rolled_back_pass_leaves_the_kept_candidate_as_the_written_file(digits, tmp_path):
    """fold is kept, then a prune that fails its gate is rolled back: the file written is fold's, judged on fold's
    comparison (no third candidate session), and it is not the rolled-back model."""
    report = onnxopt.optimize(
        digits["model"], digits["out"], passes=["fold", "prune:sparsity=0.99"], data=digits["data"], latency_runs=2
    )
    assert [step.status for step in report.steps] == ["kept", "rolled back"], report.message
    assert _phase_counts(report)["onnxruntime session (candidate)"] == 2
    assert report.final.passed and report.final.outputs[0].cosine > 0.999


@pytest.mark.parametrize(
    ("passes", "settings", "timed"),
    [
        (["prune:sparsity=0.1"], {}, False),  # zeros in the same tensors: same graph, same kernels
        (["prune:sparsity=0.1"], {"latency_runs": 3}, True),  # asked for
        (["prune:sparsity=0.1"], {"gates": {"max_latency_ratio": 2.0}}, True),  # a latency gate asks for it
        (["prune:sparsity=0.1,storage=bitmask"], {}, True),  # the weights are decoded by new nodes
        (["fold", "prune:sparsity=0.1"], {}, True),  # fold changes the graph
    ],
)
def test_the_written_file_is_timed_unless_no_kept_pass_can_change_its_latency(digits, passes, settings, timed):
    report = onnxopt.optimize(digits["model"], digits["out"], passes=passes, data=digits["data"], **settings)
    assert report.exit_code == 0 and all(step.status == "kept" for step in report.steps), report.message
    assert (report.final.latency_ratio is not None) == timed
    assert any(note.startswith("latency not measured") for note in report.notes) == (not timed)
