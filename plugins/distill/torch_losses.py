"""The objectives of :mod:`.losses` in torch, and the held-out score that ranks the epochs (torch backend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxopt import CTC_BLANK, ctc_decode

from . import losses
from .losses import MIN_PROBABILITY, weights

_EPSILON = 1e-7


def teacher_term(loss: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The distance of ``student`` from ``teacher`` (same shape) for the named loss, a scalar."""
    if loss == "kl":  # per position (row, time step): flatten everything but the class axis
        t = temperature
        s, q = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
        return (
            F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(q / t, -1), log_target=True, reduction="batchmean") * t * t
        )
    if loss == "ctc":
        return teacher_term("kl", student, teacher, temperature) + _ctc_towards_greedy(student, teacher)
    if loss == "bce":
        # on the clamped probabilities, not the logits: a pixel the student already puts below the clamp (most
        # of a text map's background) adds no gradient, which mines the hard pixels; on the logits a pruned text
        # detector recovered less in the same budget (bench/README.md, distill_real.py)
        return F.binary_cross_entropy(student.clamp(_EPSILON, 1.0 - _EPSILON), teacher.clamp(0.0, 1.0))
    if loss == "embedding":
        return F.mse_loss(student, teacher) + (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if loss == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"unknown loss {loss!r}")


def _ctc_towards_greedy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """CTC loss of the student's steps ``[N, T, C]`` against the teacher's greedy decoding, per target
    length, averaged over the rows."""
    sequences = ctc_decode(teacher.detach().float().cpu().numpy())
    targets = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    steps = torch.full((student.shape[0],), student.shape[1], dtype=torch.long)
    log_probs = F.log_softmax(student.float(), -1).transpose(0, 1)  # [T, N, C], as ctc_loss reads it
    return F.ctc_loss(log_probs, targets.to(student.device), steps, lengths, blank=CTC_BLANK, zero_infinity=True)


def objective(loss: str, alpha: float, temperature: float, student: torch.Tensor, teacher: torch.Tensor,
              labels: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """The teacher term, mixed with cross-entropy on the labels for class scores when the data has labels."""
    use_labels = labels is not None and loss == "kl" and student.dim() == 2
    soft, hard = weights(alpha, use_labels)
    term = teacher_term(loss, student, teacher, temperature)
    return soft * term + hard * F.cross_entropy(student, labels) if use_labels else term


class Score(losses.Score):
    """:class:`.losses.Score` fed torch tensors."""

    def update(self, student: torch.Tensor, teacher: torch.Tensor) -> None:  # type: ignore[override]
        super().update(student.detach().float().cpu().numpy(), teacher.detach().float().cpu().numpy())


def log_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    return torch.log(probabilities.clamp_min(MIN_PROBABILITY))
