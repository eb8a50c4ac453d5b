"""The verdict's thresholds on both sides, its figures against numpy, and the run's exit codes, in-process.

Written to kill mutants that survived the rest of the suite (issue 20, bench/README.md "Mutation testing"):
every gate is tried at exactly its measured value (which must pass: gates are inclusive) and one float step
beyond it (which must fail), so a reversed comparison, a tolerance made looser, or a gate reading the wrong
figure fails here. The exit-code tests run in-process because a mutation tool only sees code the test's own
process runs (the CLI tests in test_verdict.py run the same paths in a subprocess).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from paths import FIXTURES

import onnxopt
from onnxopt.errors import EXIT_GATE_FAILED, EXIT_NOT_VALIDATED

sys.path.insert(0, str(FIXTURES))
import build_verdict_fixtures  # noqa: E402

STEP = 2.0**-10  # a power of two: x * (1 + STEP) + STEP is exact in float32 for the data below, so are the bounds
NO_DEFAULTS = {"defaults": False, "latency_runs": 0}


def _affine(path: Path, scale: float, bias: list[float]) -> Path:
    """y = x * scale + bias over x [batch, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["scaled"]), helper.make_node("Add", ["scaled", "bias"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(np.float32(scale), "scale"),
            numpy_helper.from_array(np.array(bias, np.float32), "bias"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def tolerance_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Candidate = reference * (1 + STEP) + STEP * sign: every element is off by exactly STEP + STEP * |reference|."""
    reference = _affine(tmp_path / "ref.onnx", 1.0, [0.0, 0.0])
    candidate = _affine(tmp_path / "cand.onnx", 1.0 + STEP, [STEP, -STEP])
    x = np.array([[a, -b] for a in (1.0, 2.0, 4.0) for b in (0.5, 1.0, 4.0)], np.float32)  # column 1 negative
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    return reference, candidate, data


def _passed(reference: Path, candidate: Path, data: Path, **gates: float) -> bool:
    result = onnxopt.validate(reference, candidate, data=data, gates=gates, **NO_DEFAULTS)
    return result.passed


@pytest.mark.parametrize(
    ("atol", "rtol", "passes"),
    [
        (STEP, STEP, True),  # exactly at atol + rtol * |reference|: inclusive
        (STEP * 0.9, STEP, False),  # atol 10 % short
        (STEP, STEP * 0.9, False),  # rtol 10 % short
        (STEP * 0.9, STEP * 0.9, False),
        (2 * STEP, 0.0, False),  # atol alone covers only the |reference| < 1 elements
        (5 * STEP, 0.0, True),  # |reference| <= 4: STEP + 4 STEP
        (0.0, 2 * STEP, False),  # rtol alone misses the |reference| = 0.5 elements (STEP + STEP / 2 > STEP)
        (0.0, 3 * STEP, True),  # 3 STEP |reference| >= STEP + STEP |reference| once |reference| >= 0.5
    ],
)
def test_tolerance_gate_on_both_sides_of_atol_and_rtol(tolerance_pair, atol, rtol, passes):
    assert _passed(*tolerance_pair, atol=atol, rtol=rtol) is passes


def test_tolerance_figures_match_numpy(tolerance_pair):
    reference, candidate, data = tolerance_pair
    x = np.load(data)["x"]
    ref = ort.InferenceSession(str(reference)).run(None, {"x": x})[0].astype(np.float64)
    cand = ort.InferenceSession(str(candidate)).run(None, {"x": x})[0].astype(np.float64)
    result = onnxopt.validate(reference, candidate, data=data, gates={"atol": 1.0}, **NO_DEFAULTS)
    out = result.outputs[0]
    diff = np.abs(ref - cand)
    assert out.max_abs == diff.max() == 5 * STEP
    assert out.max_rel == pytest.approx((diff / np.abs(ref)).max(), rel=1e-12) and out.max_rel == pytest.approx(
        3 * STEP
    )
    cosine = float((ref * cand).sum() / math.sqrt((ref * ref).sum() * (cand * cand).sum()))
    assert out.cosine == pytest.approx(cosine, abs=1e-12)
    channels = [
        float(ref[:, i] @ cand[:, i] / math.sqrt((ref[:, i] @ ref[:, i]) * (cand[:, i] @ cand[:, i]))) for i in (0, 1)
    ]
    assert out.worst_channel == int(np.argmin(channels))
    assert out.worst_channel_cosine == pytest.approx(min(channels), abs=1e-12)
    assert result.passed and out.within_tolerance


@pytest.fixture
def flipped_pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The candidate negates column 1 (y = x * [1, -1]): its class scores change winner on some rows."""
    reference = _affine(tmp_path / "ref.onnx", 1.0, [0.0, 0.0])
    graph = onnx.load(reference)
    graph.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([1.0, -1.0], np.float32), "scale"))
    candidate = tmp_path / "cand.onnx"
    onnx.save(graph, candidate)
    x = np.array([[a, -b] for a in (1.0, 2.0, 4.0) for b in (0.5, 3.0)], np.float32)  # winner flips where b > a
    data = tmp_path / "x.npz"
    np.savez(data, x=x)
    return reference, candidate, data


def _figures(reference: Path, candidate: Path, data: Path) -> dict[str, float]:
    x = np.load(data)["x"]
    ref = ort.InferenceSession(str(reference)).run(None, {"x": x})[0].astype(np.float64)
    cand = ort.InferenceSession(str(candidate)).run(None, {"x": x})[0].astype(np.float64)
    cos = lambda a, b: float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))  # noqa: E731
    return {
        "min_cosine": cos(ref, cand),
        "min_channel_cosine": min(cos(ref[:, i], cand[:, i]) for i in (0, 1)),
        "min_top1": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "max_size_ratio": candidate.stat().st_size / reference.stat().st_size,
    }


CHECK_OF_GATE = {
    "min_cosine": "cosine",
    "min_channel_cosine": "channel_cosine",
    "min_top1": "top1",
    "max_size_ratio": "size",
}


@pytest.mark.parametrize("gate", sorted(CHECK_OF_GATE))
def test_every_gate_passes_at_its_value_and_fails_one_step_beyond(flipped_pair, gate):
    reference, candidate, data = flipped_pair
    result = onnxopt.validate(reference, candidate, data=data, **NO_DEFAULTS)
    out = result.outputs[0]
    measured = {"min_cosine": out.cosine, "min_channel_cosine": out.worst_channel_cosine,
                "min_top1": out.top1_agreement, "max_size_ratio": result.size_ratio}[gate]  # fmt: skip
    assert measured == pytest.approx(_figures(*flipped_pair)[gate], abs=1e-12)
    assert _passed(*flipped_pair, **{gate: measured})
    beyond = onnxopt.validate(
        reference,
        candidate,
        data=data,
        gates={gate: math.nextafter(measured, -math.inf if gate.startswith("max") else math.inf)},
        **NO_DEFAULTS,
    )
    assert [c.name for c in beyond.checks if not c.passed] == [CHECK_OF_GATE[gate]]


def test_flipped_pair_figures_are_what_the_data_was_built_for(flipped_pair):
    figures = _figures(*flipped_pair)
    assert figures["min_top1"] == pytest.approx(4 / 6) and figures["min_channel_cosine"] == pytest.approx(-1.0)
    assert 0 < figures["min_cosine"] < 1


def test_accuracy_drop_gate_at_its_value_and_one_step_beyond(tmp_path, fixtures_dir):
    """The negated digits model: accuracies hand-counted from onnxruntime's outputs and the labels."""
    model, data = fixtures_dir / "digits_cnn.onnx", fixtures_dir / "digits_cnn_val.npz"
    negated = build_verdict_fixtures.negated(model, tmp_path / "neg.onnx")
    arrays = np.load(data)
    accuracy = {
        path: float(
            np.mean(
                ort.InferenceSession(str(path)).run(None, {"input": arrays["input"]})[0].argmax(1) == arrays["labels"]
            )
        )
        for path in (model, negated)
    }
    drop = accuracy[model] - accuracy[negated]
    assert drop > 0.5
    result = onnxopt.validate(model, negated, data=data, gates={"max_accuracy_drop": drop}, **NO_DEFAULTS)
    assert (result.accuracy_reference, result.accuracy_candidate) == (accuracy[model], accuracy[negated])
    assert result.passed, result.failure_reason()
    beyond = onnxopt.validate(
        model, negated, data=data, gates={"max_accuracy_drop": math.nextafter(drop, 0.0)}, **NO_DEFAULTS
    )
    assert [c.name for c in beyond.checks if not c.passed] == ["accuracy"]
    improved = onnxopt.validate(negated, model, data=data, gates={"max_accuracy_drop": 0.0}, **NO_DEFAULTS)
    assert improved.passed  # a better candidate has a negative drop


def test_latency_gate_both_sides(fixtures_dir):
    model, data = fixtures_dir / "digits_cnn.onnx", fixtures_dir / "digits_cnn_val.npz"
    generous = onnxopt.validate(
        model, model, data=data, gates={"max_latency_ratio": 100.0}, defaults=False, latency_runs=3
    )
    assert generous.passed and generous.latency_ratio is not None
    tight = onnxopt.validate(model, model, data=data, gates={"max_latency_ratio": 0.01}, defaults=False, latency_runs=3)
    assert [c.name for c in tight.checks if not c.passed] == ["latency"]


def test_default_verdict_gates_at_0_99_cosine_and_0_9_worst_channel(tolerance_pair):
    """The defaults apply without any gate of the user, and exactly the documented values."""
    result = onnxopt.validate(*tolerance_pair[:2], data=tolerance_pair[2], latency_runs=0)
    checks = {c.name: c for c in result.checks}
    assert checks["cosine"].threshold == 0.99 and checks["channel_cosine"].threshold == 0.9
    assert result.passed


# --------------------------------------------------------------------------- exit codes of a run, in-process


def test_run_exit_codes_in_process(tmp_path, fixtures_dir):
    model, data = fixtures_dir / "digits_cnn.onnx", fixtures_dir / "digits_cnn_val.npz"
    ok = onnxopt.optimize(model, tmp_path / "ok.onnx", passes=["fold"], data=data, latency_runs=0)
    assert ok.exit_code == 0 and ok.final.compared and ok.final.passed, ok.message
    slow = onnxopt.optimize(model, tmp_path / "slow.onnx", passes=["fold"], data=data, latency_runs=3,
                            gates={"max_latency_ratio": 0.01})  # fmt: skip
    assert slow.exit_code == EXIT_GATE_FAILED
    assert slow.message.startswith("the written model fails validation: latency ratio")
    assert (tmp_path / "slow.onnx").exists() and [s.status for s in slow.steps] == ["kept"]
    unchecked = onnxopt.optimize(model, tmp_path / "off.onnx", passes=["fold"], validate=False)
    assert unchecked.exit_code == EXIT_NOT_VALIDATED and unchecked.final is None
    assert unchecked.message == "not validated: validation was switched off (--no-validate)"


# --------------------------------------------------------------------------- gates from a recipe, messages


def test_gates_from_a_mapping_name_the_unknown_and_the_valid_ones():
    from onnxopt.errors import UsageError
    from onnxopt.gates import Gates

    assert Gates.from_mapping({"atol": None, "rtol": 1}) == Gates(rtol=1.0)
    valid = "atol, max_accuracy_drop, max_latency_ratio, max_size_ratio, min_channel_cosine, min_cosine, min_top1, rtol"
    with pytest.raises(UsageError) as unknown:
        Gates.from_mapping({"min_cosin": 0.9, "atoll": 1, "rtol": 0})
    assert str(unknown.value) == f"unknown gate(s) atoll, min_cosin (valid gates: {valid})"
    with pytest.raises(UsageError) as not_a_number:
        Gates.from_mapping({"atol": "tight"})
    assert str(not_a_number.value) == "gates must be numbers: could not convert string to float: 'tight'"


def test_failure_reason_is_the_first_failure_and_how_many_more(flipped_pair):
    reference, candidate, data = flipped_pair
    one = onnxopt.validate(reference, candidate, data=data, gates={"min_top1": 0.9}, **NO_DEFAULTS)
    assert one.failure_reason() == "output 'y': top-1 agreement 0.666667 < 0.9"
    three = onnxopt.validate(reference, candidate, data=data,
                             gates={"min_top1": 0.9, "min_cosine": 0.99, "max_size_ratio": 0.5},
                             **NO_DEFAULTS)  # fmt: skip
    assert three.failure_reason().startswith("output 'y': cosine ") and three.failure_reason().endswith(" (and 2 more)")
    two = onnxopt.validate(
        reference, candidate, data=data, gates={"min_top1": 0.9, "max_size_ratio": 0.5}, **NO_DEFAULTS
    )
    assert two.failure_reason() == "output 'y': top-1 agreement 0.666667 < 0.9 (and 1 more)"
    assert onnxopt.validate(reference, reference, data=data, **NO_DEFAULTS).failure_reason() is None


def test_output_shape_is_recorded_and_a_dtype_change_alone_is_a_mismatch(tolerance_pair, tmp_path):
    reference, _, data = tolerance_pair
    assert onnxopt.validate(reference, reference, data=data, **NO_DEFAULTS).outputs[0].shape == [9, 2]
    doubled = onnx.load(reference)
    doubled.graph.node[-1].output[0] = "y32"
    doubled.graph.node.append(helper.make_node("Cast", ["y32"], ["y"], to=TensorProto.DOUBLE))
    doubled.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    onnx.save(doubled, tmp_path / "double.onnx")
    result = onnxopt.validate(reference, tmp_path / "double.onnx", data=data, **NO_DEFAULTS)
    assert [(c.name, c.message) for c in result.checks if not c.passed] == [
        ("outputs", "output 'y': candidate gives float64 [9, 2], reference float32 [9, 2]")
    ]


def _labels_model(path: Path, labels: list[str]) -> Path:
    """y = x, and a string output: the class names (compared by equality only)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]),
         helper.make_node("Constant", [], ["names"],
                          value=helper.make_tensor("v", TensorProto.STRING, [len(labels)],
                                                   [s.encode() for s in labels]))],
        "labels",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("names", TensorProto.STRING, [len(labels)])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_identical_string_outputs_pass(tmp_path, tolerance_pair):
    reference = _labels_model(tmp_path / "ref.onnx", ["cat", "dog"])
    same = onnxopt.validate(
        reference, _labels_model(tmp_path / "same.onnx", ["cat", "dog"]), data=tolerance_pair[2], latency_runs=0
    )
    assert (
        same.passed
        and same.outputs[1].cosine == 1.0
        and same.outputs[1].max_abs == 0.0
        and same.outputs[1].shape == [2]
    )


def test_a_changed_string_output_fails_the_default_verdict(tmp_path, tolerance_pair):
    reference = _labels_model(tmp_path / "ref.onnx", ["cat", "dog"])
    renamed = onnxopt.validate(
        reference, _labels_model(tmp_path / "other.onnx", ["cat", "cow"]), data=tolerance_pair[2], latency_runs=0
    )
    assert renamed.outputs[1].max_abs == math.inf
    assert not renamed.passed and renamed.outputs[1].cosine == 0.0


# --------------------------------------------------------------------------- masks, non-finite values, streaming


def _per_token_scores(path: Path, padding: float) -> Path:
    """scores [batch, seq] = ids * mask + (1 - mask) * padding: a 2-D per-position output."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["ids", "mask"], ["kept"]), helper.make_node("Sub", ["one", "mask"], ["inverse"]),
         helper.make_node("Mul", ["inverse", "padding"], ["padded"]),
         helper.make_node("Add", ["kept", "padded"], ["scores"])],
        "per_token",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq"])],
        [numpy_helper.from_array(np.float32(1.0), "one"), numpy_helper.from_array(np.float32(padding), "padding")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_padding_of_a_two_dimensional_per_token_output_is_not_compared(tmp_path):
    reference, candidate = (
        _per_token_scores(tmp_path / "ref.onnx", -3.0),
        _per_token_scores(tmp_path / "cand.onnx", 5.0),
    )
    mask = np.ones((4, 6), np.int64)
    mask[:, 4:] = 0  # the last two positions of every row are padding
    np.savez(tmp_path / "tokens.npz", input_ids=np.arange(24, dtype=np.int64).reshape(4, 6) + 1, attention_mask=mask)
    result = onnxopt.validate(
        reference, candidate, data=tmp_path / "tokens.npz", gates={"atol": 0.0, "min_cosine": 1.0}, **NO_DEFAULTS
    )
    assert result.passed, result.failure_reason()
    assert result.outputs[0].masked_positions == 8 and result.outputs[0].max_abs == 0.0


def _sqrt_model(path: Path, shift: float) -> Path:
    """y = sqrt(x + shift): NaN wherever x + shift < 0."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "shift"], ["shifted"]), helper.make_node("Sqrt", ["shifted"], ["y"])],
        "sqrt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.float32(shift), "shift")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_non_finite_values_are_counted_over_every_feed_on_both_sides(tmp_path):
    x = np.array(
        [[-1.0, 4.0], [1.0, 9.0], [-4.0, 1.0], [16.0, 0.25], [-9.0, 4.0], [1.0, 1.0]], np.float32
    )  # 3 negatives
    np.savez(tmp_path / "x.npz", x=x)
    reference = _sqrt_model(tmp_path / "ref.onnx", 0.0)
    same = onnxopt.validate(reference, reference, data=tmp_path / "x.npz", batch_size=2, **NO_DEFAULTS)
    out = same.outputs[0]
    assert (out.nonfinite_reference, out.nonfinite_candidate) == (
        3,
        3,
    ) and same.passed  # NaN where the reference has NaN
    assert out.max_abs == 0.0 and out.max_rel == 0.0 and out.cosine == 1.0
    worse = onnxopt.validate(reference, _sqrt_model(tmp_path / "cand.onnx", -2.0), data=tmp_path / "x.npz",
                             batch_size=2, gates={"min_cosine": -1.0}, **NO_DEFAULTS)  # fmt: skip
    assert (worse.outputs[0].nonfinite_reference, worse.outputs[0].nonfinite_candidate) == (3, 8)  # every x < 2
    assert [c.message for c in worse.checks if not c.passed] == ["output 'y': 8 NaN/Inf values (reference has 3)"]


def test_a_tolerance_failure_is_false_not_merely_falsy(tolerance_pair):
    result = onnxopt.validate(*tolerance_pair[:2], data=tolerance_pair[2], gates={"atol": 0.0}, **NO_DEFAULTS)
    assert result.outputs[0].within_tolerance is False
    assert [c.passed for c in result.checks if c.name == "tolerance"] == [False]


# --------------------------------------------------------------------------- gate ranges, channels, top-1, feeds


@pytest.mark.parametrize(
    ("gates", "message"),
    [({"min_cosine": 1.5}, "gate min_cosine must be between -1 and 1, got 1.5"),
     ({"min_top1": -0.1}, "gate min_top1 must be between 0 and 1, got -0.1"),
     ({"atol": -1.0}, "gate atol must be a finite number >= 0, got -1.0"),
     ({"max_size_ratio": math.inf}, "gate max_size_ratio must be a finite number >= 0, got inf"),
     ({"rtol": math.nan}, "gate rtol must be a finite number >= 0, got nan")],
)  # fmt: skip
def test_a_gate_out_of_its_range_is_refused_with_the_range(gates, message):
    from onnxopt.errors import UsageError
    from onnxopt.gates import Gates

    with pytest.raises(UsageError) as error:
        Gates(**gates)
    assert str(error.value) == message
    assert Gates(min_cosine=-1.0, min_top1=1.0, atol=0.0)  # the ends of every range are valid


def _figures_by_feed(tolerance_pair, **settings):
    result = onnxopt.validate(
        *tolerance_pair[:2], data=tolerance_pair[2], gates={"atol": 1.0}, **NO_DEFAULTS, **settings
    )
    return result.outputs[0]


def test_figures_stream_over_feeds_as_over_one(tolerance_pair):
    """Nine rows in one feed or in feeds of two (the last of one row): every figure the same."""
    whole, streamed = _figures_by_feed(tolerance_pair), _figures_by_feed(tolerance_pair, batch_size=2)
    assert streamed.shape == [2, 2]  # the first feed's
    for figure in ("max_abs", "max_rel", "cosine", "worst_channel_cosine", "top1_agreement"):
        assert getattr(streamed, figure) == pytest.approx(getattr(whole, figure), abs=1e-15), figure
    assert streamed.worst_channel == whole.worst_channel


def test_worst_channel_needs_two_rows(tolerance_pair, tmp_path):
    reference, candidate, data = tolerance_pair
    x = np.load(data)["x"]
    for rows, has_channels in ((1, False), (2, True)):
        np.savez(tmp_path / f"x{rows}.npz", x=x[:rows])
        out = onnxopt.validate(reference, candidate, data=tmp_path / f"x{rows}.npz", **NO_DEFAULTS).outputs[0]
        assert (out.worst_channel_cosine is not None) is has_channels, rows


def test_channel_axis_counts_from_either_end_and_is_ignored_out_of_range(tolerance_pair):
    from onnxopt.host_plugin import open_source
    from onnxopt.validation import compare

    reference, candidate, data = tolerance_pair
    dataset = open_source(str(data), onnxopt.load(reference))
    by_axis = {
        axis: compare(reference, candidate, dataset, latency_runs=0, defaults=None, channel_axis=axis).outputs[0]
        for axis in (0, 1, -1, -2, 2, -3)
    }
    assert by_axis[1].worst_channel_cosine == by_axis[-1].worst_channel_cosine is not None
    assert by_axis[0].worst_channel_cosine == by_axis[-2].worst_channel_cosine is not None  # the rows as channels
    assert by_axis[0].worst_channel_cosine != by_axis[1].worst_channel_cosine
    assert by_axis[2].worst_channel is None and by_axis[-3].worst_channel is None


def _output_of_shape(path: Path, shape: list[int], elem: int = TensorProto.FLOAT) -> Path:
    """y = Reshape(x) (cast to ``elem``): outputs of any shape from the same [batch, 2] input."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=elem)]
    graph = helper.make_graph(nodes, "reshape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("y", elem, None)],
                              [numpy_helper.from_array(np.array(shape, np.int64), "shape")])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("shape", "elem", "top1"),
    [([9, 2], TensorProto.FLOAT, True), ([18, 1], TensorProto.FLOAT, False), ([9, 2, 1], TensorProto.FLOAT, False),
     ([9, 2], TensorProto.INT32, False), ([18], TensorProto.FLOAT, False)],
    ids=["classes", "one-column", "three-dims", "integers", "one-dim"],
)  # fmt: skip
def test_top1_is_measured_on_float_class_scores_only(tolerance_pair, tmp_path, shape, elem, top1):
    model = _output_of_shape(tmp_path / "m.onnx", shape, elem)
    result = onnxopt.validate(model, model, data=tolerance_pair[2], **NO_DEFAULTS)
    assert result.passed and result.outputs[0].shape == shape
    assert (result.outputs[0].top1_agreement is not None) is top1


def _id_scores(path: Path, bump_zero_ids: bool) -> Path:
    """scores [batch, seq] = float(ids), plus 100 where the id is 0 when ``bump_zero_ids``."""
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT)]
    if bump_zero_ids:
        nodes += [helper.make_node("Equal", ["input_ids", "zero"], ["is_zero"]),
                  helper.make_node("Cast", ["is_zero"], ["z"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["z", "hundred"], ["bump"]),
                  helper.make_node("Add", ["f", "bump"], ["scores"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("Identity", ["f"], ["scores"]))
    graph = helper.make_graph(
        nodes,
        "ids",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq"])],
        [numpy_helper.from_array(np.int64(0), "zero"), numpy_helper.from_array(np.float32(100), "hundred")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_worst_channel_keeps_its_index_when_the_channel_axis_changes_length(tmp_path):
    """Feeds of 3, 7 and 5 positions; only position 0 (id 0 in every row) differs: it is the worst channel."""
    (tmp_path / "feeds.py").write_text(
        "import numpy as np\n"
        "def load():\n"
        "    for length in (3, 7, 5):\n"
        "        ids = np.arange(1, 2 * length + 1, dtype=np.int64).reshape(2, length); ids[:, 0] = 0\n"
        "        yield {'input_ids': ids}\n"
    )
    result = onnxopt.validate(_id_scores(tmp_path / "ref.onnx", False), _id_scores(tmp_path / "cand.onnx", True),
                              data=f"{tmp_path / 'feeds.py'}:load", **NO_DEFAULTS)  # fmt: skip
    out = result.outputs[0]
    assert (out.worst_channel, out.worst_channel_cosine) == (0, 0.0)
