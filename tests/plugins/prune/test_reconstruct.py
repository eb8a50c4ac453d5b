"""prune-structured's reconstruction: each layer the cut reaches re-fitted, by least squares, to the unpruned output.

Checked exactly where the answer is known (removed channels that are linear combinations of kept ones: the
re-fit must give the original output back), the sampled im2col against onnxruntime's own Conv for every
attribute (strides, dilations, asymmetric pads, groups, 1-3 spatial axes), and on the trained digits CNN
against pruning alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt
from onnxopt_plugins.prune.reconstruct import _inputs_at, _layer, _Normal, _positions, _targets_at

LOOSE = {"min_cosine": -1.0, "min_channel_cosine": -1.0}


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _redundant_pair(kind: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Two layers with nothing between them; the first's 8 outputs hold 2 that are 0.1 x a combination of the
    other 6 (so the L1 norm cuts those 2 at sparsity 0.25), and the second layer reads them with large weights.
    ``kind``: 3x3 Convs, MatMuls on [batch, tokens, features], or Gemms."""
    kept = rng.standard_normal((6, 5 if kind == "conv" else 12))
    first = np.concatenate([kept, 0.1 * rng.standard_normal((2, 6)) @ kept]).astype(np.float32)  # rows: outputs
    second = (rng.standard_normal((4, 8)) * np.array([1] * 6 + [20] * 2)).astype(np.float32)
    if kind == "conv":
        w1, w2 = first.reshape(8, 5, 1, 1) * np.ones((1, 1, 3, 3), np.float32), second.reshape(4, 8, 1, 1)
        w2 = w2 * rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
        nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="first"),
                 helper.make_node("Conv", ["h", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], name="second")]  # fmt: skip
        x_shape, y_shape, b1 = [4, 5, 10, 10], [4, 4, 10, 10], np.zeros(8, np.float32)
    else:
        w1, w2 = first.T.copy(), second.T.copy()
        op, biased = ("MatMul", False) if kind == "matmul" else ("Gemm", True)
        nodes = [helper.make_node(op, ["x", "w1"] + ["b1"] * biased, ["h"], name="first"),
                 helper.make_node(op, ["h", "w2"] + ["b2"] * biased, ["y"], name="second")]  # fmt: skip
        x_shape = [64, 16, 12] if op == "MatMul" else [256, 12]
        y_shape, b1 = x_shape[:-1] + [4], np.zeros(8, np.float32)
    arrays = {"w1": w1, "w2": w2, "b1": b1, "b2": rng.standard_normal(4).astype(np.float32)}
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items() if kind != "matmul" or n in ("w1", "w2")]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal(x_shape).astype(np.float32)}


def _pruned_both_ways(source: Path, data: Path, tmp_path: Path, sparsity: float) -> dict[bool, tuple[Path, object]]:
    """``source`` pruned at ``sparsity`` without and with reconstruction on ``data``: {reconstruct: (file, report)}."""
    made = {}
    for reconstruct in (False, True):
        out = tmp_path / f"out_{reconstruct}.onnx"
        report = onnxopt.optimize(
            source, out, passes=[f"prune-structured:sparsity={sparsity},round_to=1,reconstruct={reconstruct}"],
            data=data, gates=LOOSE, latency_runs=0,
        )  # fmt: skip
        assert report.exit_code == 0, report.message
        made[reconstruct] = out, report
    return made


@pytest.mark.parametrize("kind", ["conv", "matmul", "gemm"])
def test_removed_channels_that_the_kept_ones_span_are_reconstructed_exactly(tmp_path, kind):
    model, feed = _redundant_pair(kind, np.random.default_rng(3))
    source = tmp_path / "pair.onnx"
    onnx.save(model, source)
    np.savez(tmp_path / "data.npz", **feed)
    want = _run(source, feed)
    made = _pruned_both_ways(source, tmp_path / "data.npz", tmp_path, 0.25)
    errors = {}
    for reconstruct, (out, report) in made.items():
        assert report.steps[0].stats["layers"]["first"] == "8 -> 6"
        got = _run(out, feed)
        errors[reconstruct] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert errors[False] > 0.1  # the cut alone loses what the two channels carried
    assert errors[True] < 1e-3  # the second layer re-fitted reads it from the six kept channels
    lines = report.steps[0].stats["reconstructed"]
    before, after = (float(f) for f in re.match(r"relative error (\S+) -> (\S+) \(ridge", lines["second"]).groups())
    assert before > 0.01 and after < 1e-4, lines


def test_a_fit_under_input_noise_is_the_least_squares_of_noisy_copies_of_the_rows():
    """The noise term is the expectation: plain least squares on many copies of the rows, each with fresh uniform
    noise of that variance on the weights' inputs (not on the bias's constant 1), converges to it."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal((1, 300, 4)), np.ones((1, 300, 1))], axis=2)  # [groups, rows, unknowns]
    y = x @ rng.standard_normal((1, 5, 3)) + 0.1 * rng.standard_normal((1, 300, 3))
    half_width = 0.6  # uniform on [-0.6, 0.6]: variance 0.12
    noise = np.array([half_width**2 / 3] * 4 + [0.0])
    normal = _Normal(1, 5, 3)
    normal.noise = noise
    normal.add(x, y)
    fitted = normal.solve(np.zeros((1, 5, 3)), ridge=0.0)
    copies = 400
    noisy = np.tile(x, (1, copies, 1))
    noisy[..., :4] += rng.uniform(-half_width, half_width, noisy[..., :4].shape)
    expected = np.linalg.lstsq(noisy[0], np.tile(y[0], (copies, 1)), rcond=None)[0]
    np.testing.assert_allclose(fitted[0], expected, atol=0.02)
    exact = _Normal(1, 5, 3)
    exact.add(x, y)
    shrunk = np.abs(fitted[0, :4]).sum() < 0.9 * np.abs(exact.solve(np.zeros((1, 5, 3)), ridge=0.0)[0, :4]).sum()
    assert shrunk  # noise on the inputs pulls the weights towards zero: what keeps a re-fit through int8


def test_reconstruct_noise_reaches_the_fit(tmp_path):
    """prune-structured:reconstruct_noise: the re-fitted layer's weights shrink, and the float fit is less exact."""
    model, feed = _redundant_pair("conv", np.random.default_rng(3))
    source = tmp_path / "pair.onnx"
    onnx.save(model, source)
    np.savez(tmp_path / "data.npz", **feed)
    made = {}
    for noise in (0, 20):
        out = tmp_path / f"out_{noise}.onnx"
        passes = [f"prune-structured:sparsity=0.25,round_to=1,reconstruct=true,reconstruct_noise={noise}"]
        report = onnxopt.optimize(source, out, passes=passes, data=tmp_path / "data.npz", gates=LOOSE, latency_runs=0)
        assert report.exit_code == 0, report.message
        weight = next(t for t in onnx.load(out).graph.initializer if t.name.startswith("w2"))
        error = np.linalg.norm(_run(out, feed) - _run(source, feed)) / np.linalg.norm(_run(source, feed))
        made[noise] = float(np.abs(numpy_helper.to_array(weight)).sum()), float(error)
    assert made[20][0] < 0.9 * made[0][0] and made[0][1] < 1e-3 < made[20][1], made


def _conv_model(rank: int, groups: int, attributes: dict, rng: np.random.Generator) -> onnx.ModelProto:
    channels, kernel = 6, [3, 2, 3][:rank]
    weight = rng.standard_normal((4 * groups, channels // groups, *kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(rng.standard_normal(len(weight))
                                                                           .astype(np.float32), "b")]  # fmt: skip
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=groups, **attributes)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("rank", "groups", "attributes"),
    [
        (2, 1, {}),
        (2, 1, {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
        (2, 2, {"dilations": [2, 2], "pads": [2, 1, 2, 1]}),
        (2, 6, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # depthwise
        (1, 3, {"strides": [3], "pads": [0, 2], "dilations": [2]}),
        (3, 1, {"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]}),
    ],
)
def test_sampled_conv_patches_times_the_weight_give_onnxruntimes_conv(tmp_path, rank, groups, attributes):
    rng = np.random.default_rng(rank * 10 + groups)
    model = _conv_model(rank, groups, attributes, rng)
    path = tmp_path / "conv.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((3, 6, *[9, 8, 7][:rank])).astype(np.float32)
    y = _run(path, {"x": x})
    layer = _layer(next(iter(ir.load(path).graph)), kept=None)
    where = _positions(layer, y.shape, 50, rng)
    weights = np.concatenate([layer.weight, layer.bias[:, None, :]], axis=1)  # [groups, unknowns, outputs]
    got = _inputs_at(layer, x, where) @ weights
    np.testing.assert_allclose(got, _targets_at(layer, y, where), rtol=1e-4, atol=1e-4)


def test_reconstruction_wins_back_what_pruning_the_trained_cnn_lost(tmp_path, fixtures_dir):
    """digits CNN, half its channels cut: reconstructed on the calibration images, judged on the validation ones."""
    source, folded = fixtures_dir / "digits_cnn.onnx", tmp_path / "folded.onnx"
    assert onnxopt.optimize(source, folded, passes=["fold"], latency_runs=0).exit_code == 0
    feed = {"input": np.load(fixtures_dir / "digits_cnn_val.npz")["input"]}
    made = _pruned_both_ways(folded, fixtures_dir / "digits_cnn_calib.npz", tmp_path, 0.5)
    agreement = {
        r: float(np.mean(_run(out, feed).argmax(1) == _run(folded, feed).argmax(1))) for r, (out, _) in made.items()
    }
    assert agreement[False] < 0.3 and agreement[True] > 0.8, agreement  # measured: 0.16 and 0.87


def test_reconstruct_needs_data_and_says_so(tmp_path, fixtures_dir, run_cli):
    out = tmp_path / "out.onnx"
    result = run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", out, "--pass",
                     "prune-structured:reconstruct=true")  # fmt: skip
    assert result.returncode == 2 and "needs data" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
