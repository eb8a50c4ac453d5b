"""The distillation objective, in words every backend implements the same way.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

The T^2 factor keeps the soft term's gradients the same size whatever the temperature (Hinton et al.,
2015). Without labels the soft term is the whole loss. ``loss="mse"`` replaces the KL term by the mean
squared error between raw outputs, for regression heads. A teacher (and student) ending in Softmax is
compared through log-probabilities: softmax(log p / T) == softmax(z / T), so the objective is unchanged.
The validation score that picks the best epoch is top-1 agreement with the teacher (classes) or -MSE.
"""

from __future__ import annotations

#: Probabilities are clipped to this before the log, so a saturated softmax gives a finite log-probability.
MIN_PROBABILITY = 1e-12


def weights(alpha: float, has_labels: bool) -> tuple[float, float]:
    """(weight of the teacher term, weight of the label term)."""
    return (alpha, 1.0 - alpha) if has_labels else (1.0, 0.0)
