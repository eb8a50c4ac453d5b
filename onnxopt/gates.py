"""Validation gates: the thresholds a candidate model must meet against its reference.

Kept apart from :mod:`onnxopt.validation` (which needs numpy and onnxruntime) so the CLI can build its
``--atol`` / ``--min-cosine`` / ... flags from these fields without importing anything heavy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from onnxopt.errors import UsageError

#: Gates whose valid values are not "a finite number >= 0": a cosine lies in [-1, 1], an agreement in [0, 1].
_RANGES = {"min_cosine": (-1.0, 1.0), "min_channel_cosine": (-1.0, 1.0), "min_top1": (0.0, 1.0)}


@dataclass(frozen=True)
class Gates:
    """Thresholds a candidate must meet; None means "not gated". Field help doubles as CLI help."""

    atol: float | None = field(default=None, metadata={"help": "max absolute difference per element (with rtol)"})
    rtol: float | None = field(default=None, metadata={"help": "max difference relative to the reference (with atol)"})
    min_cosine: float | None = field(default=None, metadata={"help": "min cosine similarity of every output"})
    min_channel_cosine: float | None = field(
        default=None, metadata={"help": "min cosine of the worst channel of every output"}
    )
    min_top1: float | None = field(default=None, metadata={"help": "min top-1 agreement of class-score outputs"})
    max_accuracy_drop: float | None = field(
        default=None, metadata={"help": "max drop in accuracy against the labels (0.01 = one point)"}
    )
    max_latency_ratio: float | None = field(default=None, metadata={"help": "max candidate/reference latency"})
    max_size_ratio: float | None = field(default=None, metadata={"help": "max candidate/reference size on disk"})

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            low, high = _RANGES.get(name, (0.0, math.inf))
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                span = f"between {low:g} and {high:g}" if math.isfinite(high) else f"a finite number >= {low:g}"
                raise UsageError(f"gate {name} must be {span}, got {value!r}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Gates:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown gate(s) {', '.join(unknown)} (valid gates: {', '.join(sorted(names))})")
        try:
            return cls(**{k: None if v is None else float(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"gates must be numbers: {exc}") from None

    def merged(self, other: Gates) -> Gates:
        """These gates with every gate ``other`` sets taking precedence."""
        return dataclasses.replace(self, **{k: v for k, v in dataclasses.asdict(other).items() if v is not None})


@dataclass(frozen=True)
class DefaultVerdict:
    """What the default verdict asks of the outputs no gate of the user covers.

    ``generic`` judges an output no task metric judges, ``class_scores`` (when set) replaces it on a
    [batch, classes] output — except the outputs named in ``not_class_scores``, which only look like class scores
    (a student distilled as an embedding or a regression head: its pass said so) — and ``judged`` is the floor
    under an output a task metric judges.
    """

    description: str  # what it asks, for the report
    generic: Gates
    judged: Gates
    class_scores: Gates | None = None
    not_class_scores: frozenset[str] = frozenset()

    def fallback(self, output: str, judged_by_metric: bool, class_scores: bool) -> Gates:
        if judged_by_metric:
            return self.judged
        if class_scores and self.class_scores is not None and output not in self.not_class_scores:
            return self.class_scores
        return self.generic


#: The default verdict on an output no task metric judges and no gate of the user covers: its direction kept
#: (cosine) and none of its channels lost along axis 1 (a detector's class row collapsed to zero has cosine 0
#: whatever the whole output's cosine). Evidence for the values: bench/verdict.py.
DEFAULT_GATES = Gates(min_cosine=0.99, min_channel_cosine=0.9)
#: What the default verdict still asks of an output a task metric judges: a floor that catches an output gone
#: flat or wild where the metric alone could not tell (an empty reference mask has IoU 1 with any empty mask).
TASK_FLOOR = Gates(min_cosine=0.9)
#: A model that computes the original's numbers, only cheaper (fold, prune, cluster, quantize).
SAME_MODEL = DefaultVerdict(
    "task metrics where one fits, else cosine >= 0.99 and worst-channel cosine >= 0.9",
    DEFAULT_GATES, TASK_FLOOR,
)  # fmt: skip
#: A retrained model (a distilled student): a different model that should agree with the original, so no
#: 0.99 cosine — its task metrics, top-1 agreement on class scores (whose logits KL may shift per row, which
#: moves their cosine but not their arg-max), and the task floor's cosine on everything else. 0.9 is the
#: agreement the task metrics ask (ctc, neighbours). A run gives it the outputs its retraining pass declared not
#: class scores (``RunContext.not_class_scores``). bench/distill_real.py shows this verdict beside each real
#: student's held-out truth.
RETRAINED = DefaultVerdict(
    "task metrics where one fits, top-1 agreement >= 0.9 on class scores, cosine >= 0.9 elsewhere",
    TASK_FLOOR, TASK_FLOOR, Gates(min_top1=0.9),
)  # fmt: skip
