"""The prune pass: magnitude sparsity per layer and global, bitmask storage folded by onnxruntime, and structured
pruning that removes channels through every coupling (checked exactly on a model with dead channels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import onnxopt


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture
def images(fixtures_dir: Path) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)}


def test_magnitude_per_layer_prunes_each_weight_to_the_target_and_leaves_biases(tmp_path, fixtures_dir):
    out = tmp_path / "out.onnx"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", out,
                              passes=["prune:sparsity=0.6,min_elements=256"],
                              gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    assert report.exit_code == 0, report.message
    before, after = _initializers(fixtures_dir / "tiny_transformer.onnx"), _initializers(out)
    pruned = report.steps[0].stats["tensors"]
    assert pruned and all(before[name].size >= 256 for name in pruned)
    for name, array in after.items():
        zeros = float(np.mean(array == 0))
        if name in pruned:
            assert zeros == pytest.approx(0.6, abs=0.01) and zeros == pytest.approx(pruned[name], abs=1e-4)
            kept = array != 0
            assert np.array_equal(array[kept], before[name][kept])  # survivors are untouched ...
            assert np.abs(before[name][~kept]).max() <= np.abs(before[name][kept]).min()  # ... and the largest
        else:
            assert np.array_equal(array, before[name]), name  # biases, norms, small tensors


def test_magnitude_global_uses_one_threshold_so_layers_differ(tmp_path, fixtures_dir):
    out = tmp_path / "out.onnx"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", out,
                              passes=["prune:sparsity=0.5,scope=global,min_elements=256"],
                              gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    tensors = report.steps[0].stats["tensors"]
    after = _initializers(out)
    total = sum(after[n].size for n in tensors)
    zeros = sum(int(np.sum(after[n] == 0)) for n in tensors)
    assert zeros / total == pytest.approx(0.5, abs=0.01)
    assert max(tensors.values()) - min(tensors.values()) > 0.05


def test_bitmask_storage_is_smaller_decodes_exactly_and_is_folded_at_session_start(tmp_path, fixtures_dir, images):
    source = fixtures_dir / "coupled_cnn.onnx"
    dense, packed = tmp_path / "dense.onnx", tmp_path / "packed.onnx"
    for path, storage in ((dense, "dense"), (packed, "bitmask")):
        report = onnxopt.optimize(source, path, passes=[f"prune:sparsity=0.8,min_elements=512,storage={storage}"],
                                  gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
        assert report.exit_code == 0, report.message
    assert report.steps[0].stats["bitmask_encoded"] == 1  # fc.weight, the one tensor of >= 512 values
    assert packed.stat().st_size < 0.45 * dense.stat().st_size
    for got, want in zip(_run(packed, images), _run(dense, images)):
        np.testing.assert_array_equal(got, want)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    ort.InferenceSession(str(packed), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(tmp_path / "session.onnx").graph.node}
    assert not ops & {"BitShift", "CumSum", "Gather", "Mod"}, ops


def test_structured_removes_exactly_the_dead_channels_through_every_coupling(tmp_path, fixtures_dir, images):
    source, out = fixtures_dir / "coupled_cnn.onnx", tmp_path / "out.onnx"
    report = onnxopt.optimize(source, out, passes=["prune:kind=structured,sparsity=0.25,min_channels=2,round_to=1"],
                              gates={"min_cosine": 0.9999})  # fmt: skip
    assert report.exit_code == 0, report.message
    layers = report.steps[0].stats["layers"]
    assert layers["c1"] == layers["c2"] == layers["c3"] == layers["s2"] == "8 -> 6"  # residual + SE Mul merged
    assert layers["s1"] == "4 -> 3" and layers["c4"] == layers["c5"] == "8 -> 6"
    assert layers["logits"].startswith("10 kept: reaches the model output")
    weights = _initializers(out)
    assert weights["dw.weight"].shape == (6, 1, 3, 3)
    assert weights["fc.weight"].shape == (10, 12 * 8 * 8)  # Concat offsets x Flatten spatial blocks
    assert weights["aux.weight"].shape == (4, 6, 1, 1)
    depthwise = next(n for n in onnx.load(out).graph.node if n.name == "dw")
    assert next(a.i for a in depthwise.attribute if a.name == "group") == 6
    for got, want in zip(_run(out, images), _run(source, images)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_structured_shrinks_a_cnn_and_makes_it_smaller_and_lighter(tmp_path, fixtures_dir):
    out = tmp_path / "out.onnx"
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out,
                              passes=["prune:kind=structured,sparsity=0.5,round_to=1"],
                              data=fixtures_dir / "digits_cnn_val.npz",
                              gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    assert report.exit_code == 0, report.message
    pruned, original = report.steps[0].figures, report.original
    assert report.steps[0].stats["layers_pruned"] == 2
    weights = _initializers(out)
    assert weights["conv1.weight"].shape[0] == 4 and weights["conv2.weight"].shape[:2] == (8, 4)
    assert weights["bn2.weight"].shape == (8,) and weights["fc.weight"].shape == (10, 8 * 2 * 2)
    assert pruned.parameters < 0.5 * original.parameters


def test_structured_by_activation_needs_data_and_uses_it(tmp_path, fixtures_dir):
    source = fixtures_dir / "digits_cnn.onnx"
    with pytest.raises(onnxopt.OnnxoptError, match="data"):
        onnxopt.optimize(source, tmp_path / "a.onnx", passes=["prune:kind=structured,criterion=activation"])
    by_norm, by_activation = tmp_path / "n.onnx", tmp_path / "a.onnx"
    data = fixtures_dir / "digits_cnn_val.npz"
    for path, criterion in ((by_norm, "l1"), (by_activation, "activation")):
        report = onnxopt.optimize(
            source, path, passes=["fold", f"prune:kind=structured,sparsity=0.25,round_to=1,criterion={criterion}"],
            data=data, gates={"min_cosine": 0.0, "min_channel_cosine": -1.0},
        )  # fmt: skip
        assert report.exit_code == 0, report.message
    assert not np.array_equal(_initializers(by_norm)["fc.weight"], _initializers(by_activation)["fc.weight"])


def test_structured_keeps_blocked_groups_whole_and_says_why(tmp_path, fixtures_dir):
    out = tmp_path / "out.onnx"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", out,
                              passes=["prune:kind=structured,sparsity=0.5"],
                              gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    layers = report.steps[0].stats["layers"]
    assert (
        layers["mlp.fc1/MatMul_MatMul"] == "32 -> 16"
    )  # 16 is a multiple of the default round_to=8  # the MLP's hidden neurons, through Gelu, into fc2
    assert "read by LayerNormalization" in layers["embed/MatMul_MatMul"]
    assert "read by Transpose" in layers["attn.k/MatMul_MatMul"]
    assert _initializers(out)["mlp.fc2.weight"].shape == (16, 16)


def test_round_to_keeps_the_nearest_multiple_of_channels(tmp_path, fixtures_dir):
    report = onnxopt.optimize(fixtures_dir / "coupled_cnn.onnx", tmp_path / "out.onnx",
                              passes=["prune:kind=structured,sparsity=0.6,round_to=4,min_channels=2"],
                              gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    layers = report.steps[0].stats["layers"]
    assert layers["c1"] == "8 -> 4"  # 3.2 -> 4
    assert layers["s1"].startswith("4 kept")  # no wider than round_to: left whole


@pytest.mark.parametrize("bad", ["sparsity=1.0", "sparsity=-0.1", "round_to=0", "kind=channels"])
def test_bad_options_are_usage_errors(tmp_path, fixtures_dir, run_cli, bad):
    result = run_cli(
        "optimize", fixtures_dir / "digits_cnn.onnx", "-o", tmp_path / "out.onnx", "--pass", f"prune:{bad}"
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out.onnx").exists()


def _random_cnn(rng: np.random.Generator, steps: int) -> onnx.ModelProto:
    """A random CNN: convs (plain, depthwise), activations, residual Adds and SE-style Muls with earlier values of
    the same width, Concats, pooling; then either Flatten -> Gemm or a Conv head. Channel widths vary."""
    from onnx import TensorProto, helper

    nodes, inits, count = [], [], [0]
    values = [("input", 8, 16)]  # (name, channels, spatial size)

    def name(prefix: str) -> str:
        count[0] += 1
        return f"{prefix}{count[0]}"

    def conv(x: str, cin: int, cout: int, group: int = 1) -> str:
        w, b, out = name("w"), name("b"), name("conv")
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32), w))
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [out], pads=[1, 1, 1, 1], group=group, name=out))
        return out

    for _ in range(steps):
        x, c, s = values[int(rng.integers(len(values)))]
        kind = rng.choice(["conv", "dw", "relu", "add", "mul", "concat", "pool"])
        same = [v for v in values if v[1] == c and v[2] == s and v[0] != x]
        if kind == "conv":
            cout = int(rng.choice([8, 12, 16, 24]))
            values.append((conv(x, c, cout), cout, s))
        elif kind == "dw":
            values.append((conv(x, c, c, group=c), c, s))
        elif kind == "relu":
            out = name("relu")
            nodes.append(helper.make_node("Relu", [x], [out], name=out))
            values.append((out, c, s))
        elif kind in ("add", "mul") and same:
            other = same[int(rng.integers(len(same)))][0]
            out = name(kind)
            nodes.append(helper.make_node(kind.capitalize(), [x, other], [out], name=out))
            values.append((out, c, s))
        elif kind == "concat":
            partners = [v for v in values if v[2] == s and v[0] != x]
            if partners:
                other, oc, _ = partners[int(rng.integers(len(partners)))]
                out = name("cat")
                nodes.append(helper.make_node("Concat", [x, other], [out], axis=1, name=out))
                values.append((out, c + oc, s))
        elif kind == "pool" and s > 4:
            out = name("pool")
            nodes.append(helper.make_node("MaxPool", [x], [out], kernel_shape=[2, 2], strides=[2, 2], name=out))
            values.append((out, c, s // 2))
    x, c, s = values[-1]
    outputs = []
    if rng.random() < 0.5:
        flat, w = name("flat"), name("fcw")
        nodes.append(helper.make_node("Flatten", [x], [flat], name=flat))
        inits.append(numpy_helper.from_array(rng.standard_normal((c * s * s, 5)).astype(np.float32), w))
        nodes.append(helper.make_node("Gemm", [flat, w], ["out"], name="fc"))
        outputs.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5]))
    else:
        nodes.append(helper.make_node("Identity", [conv(x, c, 3)], ["out"], name="head"))
        outputs.append(helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3, s, s]))
    graph = helper.make_graph(
        nodes, "random_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 8, 16, 16])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_structured_pruning_of_random_cnns_keeps_every_shape_consistent(tmp_path):
    """Whatever the coupling, the pruned graph loads, runs and keeps its output shape (40 random CNNs)."""
    pruned_models = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        source, out = tmp_path / f"random{seed}.onnx", tmp_path / f"out{seed}.onnx"
        onnx.save(_random_cnn(rng, steps=int(rng.integers(6, 20))), source)
        feed = {"input": rng.standard_normal((2, 8, 16, 16)).astype(np.float32)}
        report = onnxopt.optimize(source, out, passes=["prune:kind=structured,sparsity=0.4,round_to=1"],
                                  gates={"min_cosine": -1.0, "min_channel_cosine": -1.0})  # fmt: skip
        assert report.exit_code == 0 and report.steps[0].status in ("kept", "unchanged"), (seed, report.message)
        want, got = _run(source, feed)[0], _run(out, feed)[0]
        assert got.shape == want.shape and np.isfinite(got).all(), seed
        pruned_models += report.steps[0].stats["layers_pruned"] > 0
    assert pruned_models >= 25  # the walk does prune most of them, not just leave them alone


@pytest.mark.parametrize("criterion", ["l1", "activation"])
def test_structured_prunes_inside_if_branches(fixtures_dir, tmp_path, criterion):
    # each branch: Conv 3->8 with two dead channels -> Relu -> Conv 8->4; the then-branch's first weight is an
    # outer-scope initializer of the main graph, the else-branch's its own
    source, out = fixtures_dir / "branch_cnn.onnx", tmp_path / "out.onnx"
    report = onnxopt.optimize(source, out,
                              passes=[f"prune:kind=structured,sparsity=0.25,round_to=1,criterion={criterion}"],
                              data="synthetic:8", gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
    assert report.exit_code == 0, report.message
    layers = report.steps[0].stats["layers"]
    note = " (by L1: activations are measured in the main graph only)" if criterion == "activation" else ""
    assert layers["then.c1"] == layers["else.c1"] == "8 -> 6" + note
    assert layers["then.c2"].startswith("4 kept") and layers["else.c2"].startswith("4 kept")  # the branch output
    branches = {a.name: a.g for n in onnx.load(out).graph.node if n.op_type == "If" for a in n.attribute}
    for name, branch in branches.items():
        reachable = {t.name: t for t in [*branch.initializer, *onnx.load(out).graph.initializer]}
        shapes = [list(reachable[node.input[1]].dims) for node in branch.node if node.op_type == "Conv"]
        assert shapes == [[6, 3, 3, 3], [4, 6, 1, 1]], name
    rng = np.random.default_rng(1)
    for sign in (1.0, -1.0):  # both branches run
        x = {"input": (sign * np.abs(rng.standard_normal((2, 3, 16, 16)))).astype(np.float32)}
        np.testing.assert_allclose(_run(out, x)[0], _run(source, x)[0], atol=1e-5)


def _kept_rows(pruned: np.ndarray, whole: np.ndarray) -> list[int]:
    """Which rows (output channels) of ``whole`` the pruned weight kept, found by their values."""
    return [next(i for i in range(len(whole)) if np.array_equal(row, whole[i])) for row in pruned]


def test_structured_pruning_equals_zeroing_the_removed_channels(tmp_path, fixtures_dir):
    """An exact bound on the outputs (issue 20: the prune tests on real-looking models bounded none): after fold
    (BatchNorm fused) a channel whose Conv weight and bias are zero is zero after Relu and MaxPool, so the folded
    digits CNN with the pruned channels zeroed by hand must give what the pruned model gives."""
    folded, pruned = tmp_path / "folded.onnx", tmp_path / "pruned.onnx"
    loose = {"min_cosine": 0.0, "min_channel_cosine": -1.0}
    assert onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", folded, passes=["fold"], latency_runs=0).exit_code == 0
    report = onnxopt.optimize(folded, pruned, passes=["prune:kind=structured,sparsity=0.25,round_to=1"],
                              data=fixtures_dir / "digits_cnn_val.npz", gates=loose, latency_runs=0)  # fmt: skip
    assert report.exit_code == 0, report.message
    whole, kept = _initializers(folded), _initializers(pruned)
    assert kept["conv1.weight"].shape[0] == 6 and kept["conv2.weight"].shape[:2] == (12, 6)
    zeroed = onnx.load(folded)
    conv1 = _kept_rows(kept["conv1.weight"], whole["conv1.weight"])
    conv2 = _kept_rows(kept["conv2.weight"], whole["conv2.weight"][:, conv1])
    removed = {"conv1": sorted(set(range(8)) - set(conv1)), "conv2": sorted(set(range(16)) - set(conv2))}
    assert len(removed["conv1"]) == 2 and len(removed["conv2"]) == 4
    for tensor in zeroed.graph.initializer:
        layer = tensor.name.split(".")[0]
        if layer in removed and tensor.name != "fc.weight":
            array = numpy_helper.to_array(tensor).copy()
            array[removed[layer]] = 0
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(zeroed, tmp_path / "zeroed.onnx")
    feed = {"input": np.load(fixtures_dir / "digits_cnn_val.npz")["input"][:64]}
    np.testing.assert_allclose(_run(pruned, feed)[0], _run(tmp_path / "zeroed.onnx", feed)[0], rtol=1e-5, atol=1e-5)
    # and the zeroing is not a no-op: the pruned model does differ from the folded one
    assert not np.allclose(_run(pruned, feed)[0], _run(folded, feed)[0], atol=1e-3)


# --- prune and prune-structured: two passes that were two kinds of one ---------------------------------------


def _registry():
    from onnxopt.session import Session

    return Session().passes


@pytest.mark.parametrize(("old", "new"), [
    ("prune:kind=structured,sparsity=0.5,round_to=1", "prune-structured:sparsity=0.5,round_to=1"),
    ("prune:kind=magnitude,sparsity=0.3,min_elements=64", "prune:sparsity=0.3,min_elements=64"),
])  # fmt: skip
def test_each_pass_gives_the_model_its_old_spelling_gave(fixtures_dir, tmp_path, caplog, old, new):
    outputs, stats = [], []
    for index, spelling in enumerate((old, new)):
        out = tmp_path / f"{index}.onnx"
        report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=[spelling], latency_runs=0,
                                  gates={"min_cosine": 0.0, "min_channel_cosine": -1.0})  # fmt: skip
        assert report.exit_code == 0, report.message
        assert report.steps[0].name.partition(":")[0] == new.partition(":")[0]
        outputs.append(out.read_bytes())
        stats.append(report.steps[0].stats)
    assert outputs[0] == outputs[1] and stats[0] == stats[1]
    assert stats[0].get("layers_pruned") == 2 or len(stats[0]["tensors"]) == 3  # both passes did change the model
    assert f"is now the pass '{new.partition(':')[0]}'" in caplog.text


def test_an_option_of_the_other_pass_is_refused_naming_the_valid_ones(tmp_path, fixtures_dir, run_cli):
    registry = _registry()
    with pytest.raises(onnxopt.UsageError, match=r"pass 'prune' has no option 'round_to' \(valid options: sparsity, "
                                                 r"scope, min_elements, storage\)"):  # fmt: skip
        registry.configure("prune", {"round_to": "8"})
    with pytest.raises(onnxopt.UsageError, match=r"pass 'prune-structured' has no option 'storage' \(valid options: "
                                                 r"sparsity, criterion, min_channels, round_to, reconstruct, "
                                                 r"reconstruct_samples, reconstruct_noise\)"):  # fmt: skip
        registry.configure("prune-structured", {"storage": "bitmask"})
    for name, foreign in [("prune", "criterion"), ("prune", "min_channels"), ("prune-structured", "scope"),
                          ("prune-structured", "min_elements"), ("prune-structured", "kind")]:  # fmt: skip
        with pytest.raises(onnxopt.UsageError, match=f"pass '{name}' has no option '{foreign}'"):
            registry.configure(name, {foreign: "1"})
    with pytest.raises(onnxopt.UsageError, match="pass 'prune-structured' has no option 'storage'"):
        registry.configure("prune", {"kind": "structured", "storage": "bitmask"})  # the old spelling, routed first
    result = run_cli(
        "optimize", fixtures_dir / "digits_cnn.onnx", "-o", tmp_path / "out.onnx", "--pass", "prune:round_to=8"
    )
    assert result.returncode == 2 and "valid options: sparsity, scope, min_elements, storage" in result.stderr


@pytest.mark.parametrize(("name", "option", "accepted", "refused", "bound"), [
    ("prune", "sparsity", "0", "-0.01", ">= 0, < 1"),
    ("prune-structured", "sparsity", "0.99", "1", ">= 0, < 1"),
    ("prune", "min_elements", "1", "0", ">= 1"),
    ("prune-structured", "min_channels", "1", "0", ">= 1"),
    ("prune-structured", "round_to", "1", "0", ">= 1"),
])  # fmt: skip
def test_declared_option_ranges_hold_on_both_sides(name, option, accepted, refused, bound):
    spec = _registry().get(name)
    assert getattr(spec.parse_options({option: accepted}), option) == float(accepted)
    with pytest.raises(onnxopt.UsageError, match=f"pass '{name}': {option} must be {bound}, got {refused}"):
        spec.parse_options({option: refused})
    assert f"({bound})" in {info.name: info.help for info in spec.option_fields()}[option]


def test_only_structured_pruning_by_activation_or_with_reconstruction_needs_data():
    registry = _registry()
    structured, magnitude = registry.get("prune-structured"), registry.get("prune")
    assert structured.requires_data(structured.parse_options({"criterion": "activation"}))
    assert not any(structured.requires_data(structured.parse_options({"criterion": c})) for c in ("l1", "l2"))
    assert structured.requires_data(structured.parse_options({"reconstruct": True}))
    assert not magnitude.requires_data(magnitude.parse_options({}))


def test_auto_searches_each_pass_with_its_own_options_and_gives_a_candidate_one_of_them():
    optuna = pytest.importorskip("optuna")
    from onnxopt.auto.space import build_space

    space = build_space(_registry())
    entries = {entry.name: entry for entry in space.passes}
    assert {d.option for d in entries["prune"].dims} == {"sparsity", "scope", "storage", "min_elements"}
    assert {d.option for d in entries["prune-structured"].dims} == {"sparsity", "criterion"}
    assert [e.name for e in space.passes].index("prune-structured") < [e.name for e in space.passes].index("quantize")
    wanted = {entry.name: False for entry in space.passes}
    dims = {"prune.sparsity": 0.3, "prune.scope": "layer", "prune.storage": "dense", "prune.min_elements": 256,
            "prune-structured.sparsity": 0.2, "prune-structured.criterion": "l2"}  # fmt: skip
    both = optuna.trial.FixedTrial({**wanted, "prune": True, "prune-structured": True, **dims})
    assert [s.name for s in space.sample(both)] == ["fold", "prune"]  # alternatives, as the two kinds were
    structured = optuna.trial.FixedTrial({**wanted, "prune-structured": True, **dims})
    assert [(s.name, s.options) for s in space.sample(structured)][1:] == [
        ("prune-structured", {"sparsity": 0.2, "criterion": "l2"})
    ]


def test_importing_the_plugin_loads_no_heavy_module():
    """The CLI loads every plugin before parsing: prune registers both passes without numpy, onnx or onnx_ir."""
    import subprocess
    import sys

    code = ("import sys, onnxopt_plugins.prune as p; p.onnxopt_register_passes(lambda spec: None); "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnx_ir', 'onnxruntime') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
