"""An example task metric plugin: how many class-score values of a YOLO-style head ([batch, 4 + K, anchors])
the candidate keeps within 0.05 of the reference. Installed, it is asked for as ``--metric scores_kept``; its
``detect`` is left out, so it never replaces the default verdict on its own.
"""

from __future__ import annotations

import numpy as np

import onnxopt
from onnxopt import MetricSpec, OutputInfo

BOX_ROWS = 4


class ScoresKept:
    def __init__(self) -> None:
        self.kept = self.total = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: dict) -> None:
        close = np.abs(candidate[:, BOX_ROWS:] - reference[:, BOX_ROWS:]) <= 0.05
        self.kept += int(close.sum())
        self.total += close.size

    def value(self) -> float:
        return self.kept / self.total if self.total else float("nan")


def _create(info: OutputInfo) -> ScoresKept | None:
    return ScoresKept() if info.reference.ndim == 3 and info.reference.shape[1] > BOX_ROWS else None


@onnxopt.hookimpl
def onnxopt_register_metrics(register) -> None:  # noqa: ANN001
    register(
        MetricSpec("scores_kept", "class scores within 0.05 of the reference's", 0.99, _create, plugin="box-metric")
    )
