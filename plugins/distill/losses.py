"""The distillation objective, in words every backend implements the same way, and which one fits an output.

- ``kl`` (class scores, sequence logits): T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the
  last axis, averaged over every position before it (rows of a classifier, time steps of a CTC head: a
  per-step KL). The T^2 factor keeps the gradients the same size whatever the temperature (Hinton et al.,
  2015). A teacher (and student) ending in Softmax is compared through log-probabilities:
  softmax(log p / T) == softmax(z / T), so the objective is unchanged.
- ``ctc`` (a CTC head's per-step scores ``[N, steps, classes]``, blank 0): the per-step ``kl`` plus the CTC loss
  of the student towards the teacher's greedily decoded sequences — sequence-level distillation (Kim & Rush,
  2016): what a text recognizer is read by is the string, which the per-step term weighs no more than the
  blank steps around it. Asked for only (``loss=ctc``); the epochs are ranked by identical decoded sequences.
- ``bce`` (probability maps, e.g. a text detector's per-pixel map): binary cross-entropy of the student's
  map against the teacher's probabilities, per element.
- ``embedding`` (sentence embeddings, hidden states): MSE + (1 - cosine) along the last axis, so both the
  direction (what retrieval uses) and the scale are matched.
- ``mse``: mean squared error between raw outputs (regression heads).

With labels, ``loss = alpha * teacher term + (1 - alpha) * cross-entropy(student, labels)``; without, the
teacher term is the whole loss. :func:`choose` picks the loss from the teacher's output (``loss=auto``).
The validation score that picks the best epoch fits the loss (:data:`SCORES`).
"""

from __future__ import annotations

import numpy as np

from onnxopt import ctc_decode

#: Probabilities are clipped to this before the log, so a saturated softmax gives a finite log-probability.
MIN_PROBABILITY = 1e-12
#: A probability map's pixel counts as "on" above this (PP-OCR's DB post-processing threshold).
MAP_THRESHOLD = 0.3
#: onnxruntime's vectorized Sigmoid returns 1.0000001 for large inputs: still a probability
_ROUNDING = 1e-5
_NORM_FLOOR = 1e-8  # torch's cosine_similarity eps: a zero row has cosine 0, not NaN
LOSSES = ("auto", "kl", "ctc", "bce", "embedding", "mse")
#: What ranks the epochs: top-1 agreement per position, identical decoded sequences, IoU of the thresholded maps,
#: mean cosine, -MSE.
SCORES = {"kl": "agreement", "ctc": "sequence agreement", "bce": "mask IoU", "embedding": "cosine", "mse": "-mse"}


def weights(alpha: float, has_labels: bool) -> tuple[float, float]:
    """(weight of the teacher term, weight of the label term)."""
    return (alpha, 1.0 - alpha) if has_labels else (1.0, 0.0)


def sums_to_one(teacher: np.ndarray) -> bool:
    """Values in [0, 1] whose last axis sums to one: probabilities, whatever op made them."""
    return (
        teacher.shape[-1] > 1 and float(teacher.min()) >= 0.0 and float(teacher.max()) <= 1.0
        and bool(np.allclose(teacher.sum(-1), 1.0, atol=1e-3))
    )  # fmt: skip


def choose(teacher: np.ndarray, probabilities: bool) -> str:
    """The loss that fits the teacher's output ``[N, ...]``, from its shape and range.

    Probabilities over the last axis -> ``kl``; other values in [0, 1] (a per-pixel map, a sigmoid score)
    -> ``bce``; unit-norm rows or a rank >= 3 float tensor (hidden states) -> ``embedding``; else (logits
    ``[N, classes]``) -> ``kl``."""
    if probabilities or sums_to_one(teacher):
        return "kl"
    if float(teacher.min()) >= -_ROUNDING and float(teacher.max()) <= 1.0 + _ROUNDING:
        return "bce"
    if teacher.ndim >= 3 or np.allclose(np.linalg.norm(teacher, axis=-1), 1.0, atol=1e-3):
        return "embedding"
    return "kl"


class Score:
    """The held-out figure of :data:`SCORES` for a loss, accumulated over batches of numpy arrays: agreement of the
    argmax per position (kl), identical greedy CTC decodings (ctc), IoU of the maps thresholded at
    :data:`MAP_THRESHOLD` (bce), mean cosine along the last axis (embedding), -MSE (mse). Backends feed it their
    outputs; the depth search feeds it onnxruntime's."""

    def __init__(self, loss: str) -> None:
        self.loss = loss
        self.hits = 0.0
        self.total = 0.0

    def update(self, student: np.ndarray, teacher: np.ndarray) -> None:
        if self.loss == "kl":
            same = student.argmax(-1) == teacher.argmax(-1)
            self.hits += float(same.sum())
            self.total += same.size
        elif self.loss == "ctc":
            self.hits += float(sum(s == t for s, t in zip(ctc_decode(student), ctc_decode(teacher))))
            self.total += len(student)
        elif self.loss == "bce":
            s, t = student > MAP_THRESHOLD, teacher > MAP_THRESHOLD
            self.hits += float((s & t).sum())
            self.total += float((s | t).sum())
        elif self.loss == "embedding":
            norms = np.maximum(np.linalg.norm(student, axis=-1), _NORM_FLOOR)
            norms = norms * np.maximum(np.linalg.norm(teacher, axis=-1), _NORM_FLOOR)
            cosine = (student * teacher).sum(-1) / norms
            self.hits += float(cosine.sum())
            self.total += cosine.size
        else:
            self.hits -= float(((student - teacher) ** 2).sum())
            self.total += student.size

    def value(self) -> float:
        if self.total == 0:
            return 1.0 if self.loss == "bce" else 0.0  # two empty maps agree
        return self.hits / self.total
