"""The torch trainer's training loss against a hand-computed distillation loss at the default temperature.

tests/plugins/distill/test_distill_losses.py checks the loss functions themselves; this checks that training feeds
them the job's temperature and mixing weight (issue 20: teacher logits not divided by T survived the outcome-only
training tests). The expected value is numpy's, not torch's.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kl(teacher: np.ndarray, student: np.ndarray, t: float) -> float:
    """Batch-mean KL(teacher_T || student_T) * T^2 (Hinton et al.)."""
    p, q = _log_softmax(teacher / t), _log_softmax(student / t)
    return float((np.exp(p) * (p - q)).sum(axis=-1).mean() * t * t)


@pytest.mark.parametrize("temperature", [4.0, 2.0])
def test_training_loss_is_kl_at_the_jobs_temperature(fixtures_dir, tmp_path, temperature):
    import onnx_ir as ir

    from onnxopt_plugins.distill.hyper import DistillHyperparameters
    from onnxopt_plugins.distill.torch_trainer import OnnxModule, TorchStudent, _Run, _tensors
    from onnxopt_plugins.distill.training import Split, TrainingJob

    data = np.load(fixtures_dir / "digits_cnn_calib.npz")["input"][:16]
    teacher = ort.InferenceSession(str(fixtures_dir / "digits_cnn.onnx")).run(None, {"input": data})[0]
    teacher = teacher * 3.0  # not the student's own logits: the loss is far from 0
    hyper = DistillHyperparameters(epochs=1, seed=0, threads=1, temperature=temperature)
    assert DistillHyperparameters().temperature == 4.0  # the default the issue names
    job = TrainingJob(ir.load(fixtures_dir / "digits_cnn.onnx"), Split({"input": data}, teacher), None, ["input"],
                      ["logits"], 0, False, hyper, tmp_path / "x.onnx")  # fmt: skip
    student = TorchStudent(OnnxModule(job.student), job)
    run = _Run(job, student, torch.device("cpu"))
    inputs, teacher_rows, labels, hidden = run.rows(_tensors(job.train), np.arange(16))
    with torch.no_grad():
        got = float(run.loss(inputs, teacher_rows, labels, hidden))
        scores = student.scores(inputs).numpy().astype(np.float64)
    assert got == pytest.approx(_kl(teacher.astype(np.float64), scores, temperature), rel=1e-4)
    assert got != pytest.approx(_kl(teacher.astype(np.float64), scores, 1.0), rel=1e-2)
