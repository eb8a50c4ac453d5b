"""Built-in task metrics: an output judged by what it is for (hook ``onnxopt_register_metrics``).

Each metric streams over the validation feeds and yields one "higher is better" figure; ``detect`` claims
the outputs whose shape and values make their task plain, so the default verdict judges them by it instead of
by a cosine that does not fit (a CTC recogniser that reads the same strings, a text detector whose thresholded
mask is kept, sentence embeddings beside padding). ``detection`` is asked for only: no detector was at hand
to calibrate its detection. Default thresholds and the evidence for them: bench/verdict.py (bench/README.md).

The figures are computed in :mod:`.compute` (numpy), imported when an output is judged: this module, which the
CLI imports on every command, only names the metrics and their default thresholds, and loads no numpy; the
settings both read (the mask threshold, CTC's blank, the detection thresholds) are in :mod:`.settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from onnxopt import MetricSpec, hookimpl

from .settings import MASK_THRESHOLD, MATCH_IOU, NEIGHBOUR_RANKS, SCORE_THRESHOLD

if TYPE_CHECKING:
    from onnxopt import OutputInfo

#: In registration order, which is the order they claim outputs in (:data:`.compute.CLAIMS` says which do):
#: name, summary, default threshold.
METRICS: tuple[tuple[str, str, float], ...] = (
    ("ctc", "greedy CTC / arg-max sequences identical (repeats collapsed, blank 0 dropped)", 0.9),
    ("mask_iou", f"IoU of the maps thresholded at {MASK_THRESHOLD}", 0.85),
    ("embedding", "mean cosine of pooled embeddings (attention-masked mean over tokens)", 0.98),
    ("detection", f"detections agreeing (F1; class scores >= {SCORE_THRESHOLD}, NMS, IoU >= {MATCH_IOU}) "
     "of a [batch, 4 + classes, anchors] head", 0.9),
    ("neighbours", f"the reference's nearest neighbour among the candidate's {NEIGHBOUR_RANKS} nearest "
     f"(recall@{NEIGHBOUR_RANKS} of pooled embeddings across samples)", 0.9),
)  # fmt: skip


def _create(metric: str, info: OutputInfo) -> object | None:
    from .compute import APPLIES  # numpy loads when an output is judged, not when the plugin registers

    applies, figure = APPLIES[metric]
    return figure() if applies(info) else None


def _claims(metric: str, info: OutputInfo) -> bool:
    from .compute import CLAIMS

    claims = CLAIMS.get(metric)
    return claims is not None and claims(info)


@hookimpl
def onnxopt_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for name, summary, threshold in METRICS:
        register(MetricSpec(name, summary, threshold, partial(_create, name), partial(_claims, name), "metrics"))
