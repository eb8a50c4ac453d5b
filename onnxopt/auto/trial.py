"""One candidate of a search: the ordinary pipeline run into the trial's folder, reduced to its figures.

:func:`run_trial` is what a worker process (or a Ray task) executes. It calls :func:`onnxopt.pipeline.optimize`
exactly as ``onnxopt optimize`` would, so a candidate is built, gated, rolled back and finally validated
by the same code as any other run; it writes the run's JSON report beside the model and returns a small,
picklable :class:`TrialOutcome` that the search process stores and ranks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt.errors import EXIT_PLUGIN_FAILED, OnnxoptError

MODEL_FILE = "model.onnx"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs; plain data, so it crosses process (and machine) boundaries."""

    number: int
    source: str
    folder: str
    passes: tuple[tuple[str, dict[str, Any]], ...]
    data: str
    gates: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)  # further recipe fields: seed, threads, shapes, ...
    plugins: tuple[str, ...] = ()


@dataclass
class TrialOutcome:
    """What one candidate measured. ``passed`` is the written file's final validation against the gates."""

    number: int
    recipe: list[str]
    kept: list[str] = field(default_factory=list)  # the passes the pipeline kept (others were rolled back)
    statuses: list[list[str]] = field(default_factory=list)
    exit_code: int = 0
    message: str | None = None
    passed: bool = False
    violation: float = 1.0  # how far the failed gates were missed; 0 when passed
    size_bytes: int | None = None
    size_ratio: float | None = None
    accuracy_reference: float | None = None
    accuracy: float | None = None
    cosine: float | None = None
    top1: float | None = None
    latency_ratio: float | None = None
    seconds: float = 0.0
    model: str | None = None
    report: str | None = None
    error: str | None = None  # the run raised: bad input (exit 2) or a crash
    duplicate_of: int | None = None


def pass_label(name: str, options: dict[str, Any]) -> str:
    """The CLI spelling of a pass, ``name:key=value,...``."""
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def run_in_worker(job: TrialJob, quiet: bool) -> TrialOutcome:
    """A worker's entry point: :func:`run_trial` with library chatter kept off the search's stdout.

    onnxruntime's weight-only quantizer sets the root logger to INFO when imported and its calibrators
    print progress: a search running many trials would interleave hundreds of those lines with its table
    (or its ``--json``). Log records below WARNING are dropped, prints go to stderr; with ``quiet``,
    warnings and prints are dropped too.
    """
    logging.disable(logging.WARNING if quiet else logging.INFO)
    with open(os.devnull, "w") if quiet else contextlib.nullcontext(sys.stderr) as sink:
        with contextlib.redirect_stdout(sink):
            return run_trial(job)


def run_trial(job: TrialJob) -> TrialOutcome:
    """Build and validate one candidate with the ordinary pipeline; never raises for a failed candidate."""
    from onnxopt import pipeline
    from onnxopt.gates import Gates
    from onnxopt.recipe import Recipe, build_recipe
    from onnxopt.report import to_json

    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    outcome = TrialOutcome(job.number, [pass_label(name, options) for name, options in job.passes])
    start = time.perf_counter()
    try:
        recipe = build_recipe(Recipe(gates=Gates(**job.gates)), passes=list(job.passes), data=job.data, **job.settings)
        report = pipeline.optimize(job.source, folder / MODEL_FILE, recipe, plugins=job.plugins, quiet=True)
    except OnnxoptError as exc:
        outcome.error, outcome.exit_code = str(exc), exc.exit_code
        return outcome
    except Exception as exc:  # a bug in a pass that escaped the pipeline: this candidate fails, the search goes on
        outcome.error, outcome.exit_code = f"{type(exc).__name__}: {exc}", EXIT_PLUGIN_FAILED
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - start
    (folder / REPORT_FILE).write_text(to_json(report), encoding="utf-8")
    outcome.report = str(folder / REPORT_FILE)
    outcome.model = report.output
    outcome.exit_code, outcome.message = report.exit_code, report.message
    outcome.kept = [step.name for step in report.steps if step.status == "kept"]
    outcome.statuses = [[step.name, step.status] for step in report.steps]
    final = report.final
    if final is not None:
        outcome.passed = final.passed
        outcome.violation = _violation(final)
        outcome.size_bytes, outcome.size_ratio = final.size_candidate, final.size_ratio
        outcome.accuracy_reference, outcome.accuracy = final.accuracy_reference, final.accuracy_candidate
        outcome.cosine = final.worst_cosine
        top1 = [o.top1_agreement for o in final.outputs if o.top1_agreement is not None]
        outcome.top1 = min(top1) if top1 else None
        outcome.latency_ratio = final.latency_ratio
    return outcome


def _violation(result: Any) -> float:
    """Sum of the distances by which failed checks missed their thresholds (1 for a check without a figure)."""
    failed = [check for check in result.checks if not check.passed]
    total = sum(abs(c.value - c.threshold) if c.value is not None and c.threshold is not None else 1.0 for c in failed)
    return max(total, 1e-9) if failed else 0.0
