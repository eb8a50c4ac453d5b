"""The distillation objective, in words every backend implements the same way, and which one fits an output.

- ``kl`` (class scores, sequence logits): T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the
  last axis, averaged over every position before it (rows of a classifier, time steps of a CTC head: a
  per-step KL). The T^2 factor keeps the gradients the same size whatever the temperature (Hinton et al.,
  2015). A teacher (and student) ending in Softmax is compared through log-probabilities:
  softmax(log p / T) == softmax(z / T), so the objective is unchanged.
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

#: Probabilities are clipped to this before the log, so a saturated softmax gives a finite log-probability.
MIN_PROBABILITY = 1e-12
#: A probability map's pixel counts as "on" above this (PP-OCR's DB post-processing threshold).
MAP_THRESHOLD = 0.3
#: onnxruntime's vectorized Sigmoid returns 1.0000001 for large inputs: still a probability
_ROUNDING = 1e-5
LOSSES = ("auto", "kl", "bce", "embedding", "mse")
#: What ranks the epochs: top-1 agreement per position, IoU of the thresholded maps, mean cosine, -MSE.
SCORES = {"kl": "agreement", "bce": "mask IoU", "embedding": "cosine", "mse": "-mse"}


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
