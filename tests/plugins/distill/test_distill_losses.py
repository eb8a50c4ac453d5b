"""The distill plugin's objectives against hand-computed values, the loss chosen per output, the held-out
scores, and how training behaves as a tool (time budget, progress, checkpoint and resume)."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from onnxopt_plugins.distill.losses import choose

torch = pytest.importorskip("torch")

from onnxopt_plugins.distill.torch_losses import Score, objective, teacher_term  # noqa: E402


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kl(teacher, student, t):
    p, q = _softmax([v / t for v in teacher]), _softmax([v / t for v in student])
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))


def test_kl_at_temperature_divides_both_sides_by_t_and_scales_by_t_squared():
    student, teacher = [1.0, 2.0, 3.0], [3.0, 1.0, 0.0]
    got = float(teacher_term("kl", torch.tensor([student]), torch.tensor([teacher]), 2.0))
    assert got == pytest.approx(4.0 * _kl(teacher, student, 2.0), rel=1e-5)
    assert got != pytest.approx(4.0 * _kl(teacher, student, 1.0), rel=1e-2)  # the division by T matters here


def test_kl_on_sequence_logits_is_the_mean_of_the_per_step_kl():
    student = [[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]]]  # one row, two time steps, three symbols
    teacher = [[[2.0, 1.0, 0.0], [2.0, 0.5, 0.0]]]
    expected = (_kl(teacher[0][0], student[0][0], 1.0) + _kl(teacher[0][1], student[0][1], 1.0)) / 2
    assert float(teacher_term("kl", torch.tensor(student), torch.tensor(teacher), 1.0)) == pytest.approx(
        expected, rel=1e-5
    )


def test_ctc_loss_adds_ctc_towards_the_teachers_greedy_decoding_to_the_per_step_kl():
    """Two steps over (blank, a): the teacher decodes "a"; CTC sums the three alignments of "a" in two steps."""
    student = [[[0.0, 1.0], [1.5, 0.0]]]
    teacher = [[[0.0, 2.0], [0.0, 1.0]]]  # a, a -> "a"
    p = [_softmax(step) for step in student[0]]  # p[t][0]: blank, p[t][1]: a
    ctc = -math.log(p[0][1] * p[1][1] + p[0][1] * p[1][0] + p[0][0] * p[1][1])
    per_step = (_kl(teacher[0][0], student[0][0], 1.0) + _kl(teacher[0][1], student[0][1], 1.0)) / 2
    got = teacher_term("ctc", torch.tensor(student), torch.tensor(teacher), 1.0)
    assert float(got) == pytest.approx(per_step + ctc, rel=1e-5)


def test_binary_cross_entropy_per_pixel():
    student, teacher = torch.tensor([[0.2, 0.9]]), torch.tensor([[0.0, 1.0]])
    assert float(teacher_term("bce", student, teacher, 1.0)) == pytest.approx(
        -(math.log(0.8) + math.log(0.9)) / 2, rel=1e-5
    )


def test_embedding_loss_is_mse_plus_one_minus_cosine():
    student, teacher = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    mse = ((1 - 0) ** 2 + (0 - 2) ** 2 + (1 - 2) ** 2 + (1 - 2) ** 2) / 4  # 1.75
    assert float(teacher_term("embedding", student, teacher, 1.0)) == pytest.approx(
        mse + ((1 - 0.0) + (1 - 1.0)) / 2, rel=1e-5
    )


def test_labels_mix_in_cross_entropy_for_class_scores_only():
    student, teacher, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    ce = -math.log(_softmax([2.0, 0.0])[0])
    mixed = float(objective("kl", 0.25, 1.0, student, teacher, labels))
    assert mixed == pytest.approx(0.25 * _kl([0.0, 1.0], [2.0, 0.0], 1.0) + 0.75 * ce, rel=1e-5)
    maps = torch.tensor([[0.5, 0.5]])
    assert float(objective("bce", 0.25, 1.0, maps, maps, labels)) == pytest.approx(math.log(2), rel=1e-5)  # no CE


@pytest.mark.parametrize(("name", "teacher", "probabilities", "expected"), [
    ("class logits", np.array([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]]), False, "kl"),
    ("softmax", np.log(np.array([[0.2, 0.8], [0.5, 0.5]])), True, "kl"),
    ("sequence probabilities", np.full((2, 5, 4), 0.25), False, "kl"),
    ("text probability map", np.random.default_rng(0).random((2, 1, 8, 8)), False, "bce"),
    ("sigmoid score", np.array([[0.1], [0.9]]), False, "bce"),
    ("sigmoid map as onnxruntime rounds it", np.array([[[0.0, 1.0000001]]], np.float32), False, "bce"),
    ("normalized sentence embedding", np.array([[0.6, -0.8], [1.0, 0.0]]), False, "embedding"),
    ("hidden states", np.random.default_rng(0).standard_normal((2, 4, 8)), False, "embedding"),
])  # fmt: skip
def test_loss_is_chosen_from_the_output_shape_and_range(name, teacher, probabilities, expected):
    assert choose(teacher, probabilities) == expected, name


def test_held_out_scores():
    score = Score("bce")
    score.update(torch.tensor([[0.9, 0.9, 0.1, 0.1]]), torch.tensor([[0.9, 0.1, 0.9, 0.1]]))
    assert score.value() == pytest.approx(1 / 3)  # one pixel on in both, three on in either
    score = Score("kl")
    score.update(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert score.value() == 0.5  # per time step
    score = Score("ctc")  # symbols (blank, a, b): (a, a, blank) and (a, blank, blank) both read "a"
    a_a = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    a_blank = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    blank_a_b = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # "ab"
    score.update(torch.tensor([a_a, a_a]), torch.tensor([a_blank, blank_a_b]))
    assert score.value() == 0.5  # per decoded sequence, not per step (a step differs in the first row)
    score = Score("embedding")
    score.update(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    assert score.value() == pytest.approx(math.sqrt(0.5))


# training as a tool


def _job(fixtures_dir, tmp_path, progress=None, **hyper):
    import onnx_ir as ir

    from onnxopt_plugins.distill.hyper import DistillHyperparameters
    from onnxopt_plugins.distill.training import Split, TrainingJob

    data = np.load(fixtures_dir / "digits_cnn_calib.npz")
    teacher = ort.InferenceSession(str(fixtures_dir / "digits_cnn.onnx")).run(None, {"input": data["input"]})[0]
    settings = {"epochs": 4, "seed": 3, "threads": 1, "lr": 0.01, "patience": 0, **hyper}
    kwargs = {"progress": progress} if progress else {}
    return TrainingJob(
        ir.load(fixtures_dir / "digits_cnn.onnx"),
        Split({"input": data["input"]}, teacher),
        None,
        ["input"],
        ["logits"],
        0,
        False,
        DistillHyperparameters(**settings),
        tmp_path / "x.onnx",
        **kwargs,
    )


def _train(job):
    from onnxopt_plugins.distill.torch_trainer import OnnxModule, TorchStudent, train

    student = TorchStudent(OnnxModule(job.student), job)
    return train(job, student), {k: v.clone() for k, v in student.module.state_dict().items()}


class _Bar:
    """A progress bar that records what training shows, and can stop the run like a Ctrl-C."""

    def __init__(self, stop_at=None):
        self.postfix, self.stop_at = [], stop_at

    def __call__(self, iterable, **_):
        self.iterable = iterable
        return self

    def __iter__(self):
        for step in self.iterable:
            if step == self.stop_at:
                raise KeyboardInterrupt
            yield step

    def set_postfix(self, **values):
        self.postfix.append(values)


def test_progress_shows_loss_and_held_out_agreement_each_epoch(fixtures_dir, tmp_path):
    bar = _Bar()
    result, _ = _train(_job(fixtures_dir, tmp_path, progress=bar, epochs=2))
    assert len(bar.postfix) == 2 and set(bar.postfix[0]) == {"loss", "held_out", "best"}
    assert float(bar.postfix[-1]["held_out"]) == pytest.approx(result.history[-1]["val_score"], abs=1e-4)


def test_time_budget_stops_training_and_keeps_the_best_weights(fixtures_dir, tmp_path):
    result, _ = _train(_job(fixtures_dir, tmp_path, epochs=10_000, max_time=1.0))
    assert 1 <= result.epochs < 10_000 and result.history[-1]["stopped"] == "time budget"
    assert result.history[-1]["seconds"] < 20


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(fixtures_dir, tmp_path):
    _, straight = _train(_job(fixtures_dir, tmp_path))
    checkpoint = tmp_path / "run.ckpt"
    per_epoch = -(-100 // 32)  # the fixture's 100 calibration rows
    with pytest.raises(KeyboardInterrupt):
        _train(_job(fixtures_dir, tmp_path, progress=_Bar(stop_at=2 * per_epoch + 3), checkpoint=str(checkpoint)))
    assert checkpoint.exists()
    result, resumed = _train(_job(fixtures_dir, tmp_path, checkpoint=str(checkpoint)))
    assert result.epochs == 4 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_device_torch_cannot_see_is_a_usage_error(fixtures_dir, tmp_path):
    from onnxopt.errors import UsageError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="torch sees no CUDA device"):
        _train(_job(fixtures_dir, tmp_path, device="cuda"))


def test_a_softmax_student_learns_a_class_its_probability_underflows_for_and_ships_its_softmax(tmp_path):
    """The log of a clamped probability has no gradient where it underflows: trained through LogSoftmax, the
    teacher's class (at first 1e-26) is learnt; the exported student still outputs probabilities."""
    import onnx
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from onnxopt_plugins.distill.hyper import DistillHyperparameters
    from onnxopt_plugins.distill.torch_trainer import TorchTrainer
    from onnxopt_plugins.distill.training import Split, TrainingJob

    weights = np.zeros((4, 3), np.float32)
    weights[:, 2] = -15.0  # inputs near 1: class 2's logit about -60, probability about 1e-26
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    student = tmp_path / "student.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), student)
    x = (1.0 + 0.1 * np.random.default_rng(0).standard_normal((32, 4))).astype(np.float32)
    teacher = np.log(np.tile(np.array([0.01, 0.01, 0.98], np.float32), (32, 1)))  # log-probabilities
    before = ort.InferenceSession(str(student)).run(None, {"x": x})[0]
    assert before[:, 2].max() < 1e-12
    hyper = DistillHyperparameters(epochs=10, batch_size=8, lr=2.0, seed=0, threads=1, patience=0, loss="kl",
                                   temperature=1.0)  # fmt: skip
    job = TrainingJob(ir.load(student), Split({"x": x}, teacher), None, ["x"], ["p"], 0, True, hyper,
                      tmp_path / "out.onnx")  # fmt: skip
    TorchTrainer().fit(job)
    after = ort.InferenceSession(str(job.output)).run(None, {"x": x})[0]
    np.testing.assert_allclose(after.sum(-1), 1.0, atol=1e-5)  # probabilities, not log-probabilities
    assert after[:, 2].min() > 0.5


def _greedy(scores):
    """Each row's arg-max symbols, repeats collapsed, blanks (0) dropped."""
    out = []
    for row in scores.argmax(-1):
        out.append(tuple(int(s) for i, s in enumerate(row) if s != 0 and (i == 0 or s != row[i - 1])))
    return out


def test_ctc_loss_trains_a_recognizer_towards_the_teachers_strings(tmp_path):
    """A per-step recognizer (MatMul + Softmax over blank and 3 symbols) as its own student with noisy weights,
    distilled with loss=ctc: the epochs are ranked by identical decoded strings, which training raises."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxopt_plugins.distill import distill

    rng = np.random.default_rng(0)

    def recognizer(path, weights):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12, 6])],
            [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 12, 4])],
            [numpy_helper.from_array(weights.astype(np.float32), "w")],
        )  # fmt: skip
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    weights = 3.0 * rng.standard_normal((6, 4))
    teacher = recognizer(tmp_path / "teacher.onnx", weights)
    student = recognizer(tmp_path / "student.onnx", weights + 2.0 * rng.standard_normal((6, 4)))
    np.savez(tmp_path / "train.npz", x=rng.standard_normal((256, 12, 6)).astype(np.float32))
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((64, 12, 6)).astype(np.float32))
    report = distill(teacher, tmp_path / "out.onnx", data=tmp_path / "train.npz", val=tmp_path / "val.npz",
                     student=student, loss="ctc", temperature=1.0, epochs=30, lr=0.05, batch_size=16, threads=1,
                     patience=0)  # fmt: skip
    stats = report.steps[0].stats
    assert stats["loss"] == "ctc" and stats["held_out_score"] == "sequence agreement"
    x = np.load(tmp_path / "val.npz")["x"]
    strings = [_greedy(ort.InferenceSession(str(m)).run(None, {"x": x})[0]) for m in (teacher, student)]
    start = np.mean([a == b for a, b in zip(*strings)])
    assert stats["best_epoch"] > 0 and stats["best_score"] >= 0.9 > start, stats["history"]
    assert report.exit_code == 0, report.message  # the default verdict's ctc metric agrees


def test_ctc_loss_on_an_output_without_steps_is_a_usage_error(fixtures_dir, tmp_path, run_cli):
    """iris's [batch, classes] output has no steps to decode: a one-line error, exit 2, nothing written."""
    out = tmp_path / "s.onnx"
    result = run_cli("distill", fixtures_dir / "iris_mlp.onnx", "--data", fixtures_dir / "iris_mlp_calib.npz", "-o",
                     out, "--loss", "ctc", "--epochs", "1", "--threads", "1")  # fmt: skip
    assert result.returncode == 2 and "loss ctc needs per-step scores" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
