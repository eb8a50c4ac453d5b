"""Ranking finished trials: the objective, the Pareto frontier, the model to ship, the printed table.

Quality is accuracy when the data has labels, else the worst output cosine against the original. The
frontier holds the trials no other trial beats on size, quality and latency at once; a trial whose
result equals an earlier one (the same passes kept, the same figures) is listed once. The model to ship
is the best objective among the trials that passed every gate (within 1 % of it, the most accurate one);
when none passed, the most accurate trial, and the caller says so.

Written here: a few dozen points need no multi-objective library, and optuna's own Pareto helpers work
on the study's single objective, not on the measured figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from onnxopt.auto.trial import TrialOutcome
from onnxopt.report import human_bytes, table

OBJECTIVES = ("size", "latency", "balanced")


def quality(outcome: TrialOutcome) -> float:
    """Accuracy against the labels, or the worst output cosine when there are none (higher is better)."""
    value = outcome.accuracy if outcome.accuracy is not None else outcome.cosine
    return value if value is not None else -math.inf


def objective_value(outcome: TrialOutcome, objective: str) -> float:
    """The figure the sampler minimises: size ratio, latency ratio, or their geometric mean."""
    size = outcome.size_ratio if outcome.size_ratio is not None else math.inf
    latency = outcome.latency_ratio if outcome.latency_ratio is not None else math.inf
    if objective == "size":
        return size
    if objective == "latency":
        return latency
    return math.sqrt(size * latency)


def measured(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """Trials that produced a validated model (not duplicates, not crashed runs)."""
    return [o for o in outcomes if o.error is None and o.duplicate_of is None and o.size_ratio is not None]


#: Latency ratios closer than this are the same on a shared machine (interleaved medians still move ~5 %).
LATENCY_NOISE = 0.05


#: Objective values this close are a tie, and the more accurate trial wins: 1 % of size is not worth accuracy.
OBJECTIVE_TIE = 0.01


def _latency(outcome: TrialOutcome) -> float:
    return outcome.latency_ratio if outcome.latency_ratio is not None else math.inf


def _dominates(q: TrialOutcome, p: TrialOutcome, latency: bool) -> bool:
    """``q`` is as small, as good and (within noise) as fast as ``p``, and better somewhere or earlier."""
    if q.size_ratio > p.size_ratio or quality(q) < quality(p):
        return False
    if latency and _latency(q) > _latency(p) * (1 + LATENCY_NOISE):
        return False
    faster = latency and _latency(q) * (1 + LATENCY_NOISE) < _latency(p)
    return q.size_ratio < p.size_ratio or quality(q) > quality(p) or faster or q.number < p.number


def pareto(outcomes: Sequence[TrialOutcome], *, latency: bool = True) -> list[TrialOutcome]:
    """Trials no other beats on size, quality and latency, ordered by size; equal results listed once.

    ``latency=False`` gives the size / quality frontier the plot draws as a line.
    """
    done = measured(outcomes)
    front = [p for p in done if not any(q is not p and _dominates(q, p, latency) for q in done)]
    return sorted(front, key=lambda o: (o.size_ratio, -quality(o)))


def choose(outcomes: Sequence[TrialOutcome], objective: str) -> tuple[TrialOutcome | None, bool]:
    """The trial to ship and whether it met the budget (else it is the most accurate one)."""
    done = measured(outcomes)
    feasible = pareto([o for o in done if o.passed])  # an equal result within latency noise: the earlier trial
    if feasible:
        best = min(objective_value(o, objective) for o in feasible)
        close = [o for o in feasible if objective_value(o, objective) <= best * (1 + OBJECTIVE_TIE)]
        return min(close, key=lambda o: (-quality(o), objective_value(o, objective), o.number)), True
    if done:
        return min(done, key=lambda o: (-quality(o), objective_value(o, objective), o.number)), False
    return None, False


def passes_text(outcome: TrialOutcome) -> str:
    return " + ".join(outcome.kept) or "(original)"


def frontier_table(front: Sequence[TrialOutcome], best: TrialOutcome | None) -> str:
    """The frontier as an aligned table; the shipped trial is marked with ``*``."""
    labelled = any(o.accuracy is not None for o in front)
    if best is not None and best not in front:  # beaten only by a trial that missed a gate
        front = [*front, best]
    rows = [
        [
            ("*" if best is not None and o.number == best.number else "") + str(o.number),
            passes_text(o),
            human_bytes(o.size_bytes),
            round(o.size_ratio, 4),
            round(quality(o), 4),
            None if o.latency_ratio is None else round(o.latency_ratio, 3),
            "yes" if o.passed else "no",
        ]
        for o in front
    ]
    quality_header = "accuracy" if labelled else "min cosine"
    return table(["trial", "passes kept", "size", "size x", quality_header, "latency x", "meets budget"], rows)
