"""The command line end to end (subprocess), as a release pipeline calls it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import onnx


def test_optimize_prints_a_report_and_writes_a_smaller_valid_model(run_cli, fixtures_dir, tmp_path):
    out = tmp_path / "digits.opt.onnx"
    run = run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", out, "--pass", "fold",
                  "--data", fixtures_dir / "digits_cnn_val.npz")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "fold" in run.stdout and re.search(r"batchnorm_fused +2", run.stdout) and "OK" in run.stdout
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert out.stat().st_size <= (fixtures_dir / "digits_cnn.onnx").stat().st_size
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert not ops & {"BatchNormalization", "Identity", "Dropout"}


def test_optimize_json_report(run_cli, fixtures_dir, tmp_path):
    run = run_cli("optimize", fixtures_dir / "tiny_transformer.onnx", "-o", tmp_path / "t.onnx", "--pass", "fold",
                  "--data", fixtures_dir / "tiny_transformer_val.npz", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and report["exit_code"] == 0
    assert report["steps"][0]["name"] == "fold"
    assert report["final"]["passed"] and report["final"]["accuracy_candidate"] is not None


def test_validate_exit_codes(run_cli, fixtures_dir, tmp_path):
    out = tmp_path / "d.onnx"
    assert run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", out, "--pass", "fold").returncode == 0
    data = fixtures_dir / "digits_cnn_val.npz"
    ok = run_cli("validate", fixtures_dir / "digits_cnn.onnx", out, "--data", data, "--atol", "1e-4")
    assert ok.returncode == 0, ok.stderr
    assert "[pass]" in ok.stdout and "accuracy" in ok.stdout and "latency" in ok.stdout
    # a different model with the same signature fails the tolerance gate: exit 1 and a one-line reason
    other = tmp_path / "other.onnx"
    model = onnx.load(fixtures_dir / "digits_cnn.onnx")
    weight = next(i for i in model.graph.initializer if i.dims and len(i.dims) == 2)
    arr = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
    onnx.save(model, other)
    bad = run_cli("validate", fixtures_dir / "digits_cnn.onnx", other, "--data", data, "--atol", "1e-4")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "validation failed" in lines[0] and "atol" in lines[0]


def test_inspect_shows_sparsity_and_unique_values(run_cli, fixtures_dir):
    run = run_cli("inspect", fixtures_dir / "digits_cnn.onnx")
    assert run.returncode == 0, run.stderr
    for words in ("BatchNormalization", "parameters", "sparsity", "unique", "float"):
        assert words in run.stdout
    data = json.loads(run_cli("inspect", fixtures_dir / "digits_cnn.onnx", "--json").stdout)
    assert data["ops"]["Conv"] == 2 and data["parameters"] > 0 and data["file_bytes"] > 0
    assert all(0.0 <= t["sparsity"] <= 1.0 and t["unique_values"] >= 1 for t in data["tensors"])


def test_passes_and_plugins_listings(run_cli):
    passes = run_cli("passes", "--json")
    fold = next(p for p in json.loads(passes.stdout) if p["name"] == "fold")
    assert fold["plugin"] == "fold"
    assert {o["name"] for o in fold["options"]} >= {"constant_folding", "fuse_batchnorm"}
    assert all(o["help"] for o in fold["options"])
    assert {"constant_folding": "bool", "max_growth_mib": "float", "max_rounds": "int"}.items() <= {
        o["name"]: o["type"] for o in fold["options"]
    }.items()
    plugins = run_cli("plugins")
    assert plugins.returncode == 0 and "onnxopt_register_passes" in plugins.stdout


def test_in_place_replaces_the_input_only_when_asked(run_cli, fixtures_dir, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes((fixtures_dir / "digits_cnn.onnx").read_bytes())
    refused = run_cli("optimize", model, "-o", model, "--pass", "fold")
    assert refused.returncode == 2 and model.read_bytes() == (fixtures_dir / "digits_cnn.onnx").read_bytes()
    done = run_cli("optimize", model, "--in-place", "--pass", "fold")
    assert done.returncode == 0, done.stderr
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(model).graph.node}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left


def test_output_piped_into_a_reader_that_leaves_is_no_traceback():
    """`onnxopt passes | head -1`: the reader closes the pipe; onnxopt stops quietly (exit 141, as on SIGPIPE)."""
    producer = subprocess.Popen(
        [sys.executable, "-m", "onnxopt.cli", "passes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    producer.stdout.close()  # gone before the first line is written (imports take longer than this)
    stderr = producer.stderr.read().decode()
    assert producer.wait(timeout=60) == 141 and "Traceback" not in stderr, stderr


def test_quantize_prints_only_onnxopt_output(run_cli, fixtures_dir, tmp_path):
    # onnxruntime's quantizer warns through the root logger on every per-channel trial over a layer norm, each
    # session warned of the divisors the Div -> Mul rewrite left unused, and the 4-bit quantizer of the IR
    # version the opset upgrade left: a pipeline log full of them
    common = [fixtures_dir / "tiny_transformer.onnx", "--pass", "fold",
              "--data", fixtures_dir / "tiny_transformer_calib.npz", "--min-cosine", "0.9"]  # fmt: skip
    for index, quantize in enumerate(["quantize:accuracy_aware=true,max_trials=3", "quantize:mode=weight_only"]):
        result = run_cli("optimize", *common, "--pass", quantize, "-o", tmp_path / f"q{index}.onnx")
        assert result.returncode == 0, result.stderr
        assert "WARNING" not in result.stderr and "out-of-range" not in result.stderr, quantize
        assert "Removing initializer" not in result.stderr + result.stdout, quantize


def test_verbose_prints_the_cost_of_each_phase_and_json_carries_it(run_cli, fixtures_dir, tmp_path):
    args = ["optimize", fixtures_dir / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--pass", "fold",
            "--data", fixtures_dir / "digits_cnn_val.npz", "--latency-runs", "2"]  # fmt: skip
    run = run_cli(*args, "--verbose")
    assert run.returncode == 0, run.stderr
    for phase in (
        "load",
        "pass fold",
        "save (each pass)",
        "checker (each pass)",
        "onnxruntime session (candidate)",
        "reference runs",
        "candidate runs",
        "latency",
        "save (with the final validation)",
    ):
        assert re.search(rf"^{re.escape(phase)} +\d+ +[\d.]+ +\d+$", run.stdout, re.M), phase
    costs = {p["name"]: p for p in json.loads(run_cli(*args, "--json").stdout)["costs"]}
    assert costs["candidate runs"]["count"] == 2 * costs["reference runs"]["count"] // 2 > 0
    assert costs["latency"]["count"] == 1 and all(p["peak_rss_mib"] > 0 for p in costs.values())
