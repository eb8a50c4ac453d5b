"""The accuracy-aware loop: put the worst-quantized nodes back to float until the run's gates hold.

Ranking uses onnxruntime's own debugging tools (``onnxruntime.quantization.qdq_loss_debug``): both the float
and the QDQ model are run with every intermediate tensor exposed, and each quantized activation gets the
signal-to-quantization-noise ratio of its QuantizeLinear / DequantizeLinear pair (higher is better). The
consumers of the lowest-SQNR tensors are excluded first, ``step`` at a time; every trial is quantized again
and judged by the same validation and gates as the pipeline (no second code path). The loop stops when the
gates hold or ``max_trials`` / ``max_time`` run out, and always returns the best model it saw — the one that
passes with the fewest float nodes, else the most accurate — with every trial and the reason each node stayed
float in the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from onnxopt import RunContext, ValidationResult

    from .ort_quantizer import DatasetReader


@dataclass
class Trial:
    excluded: list[str]
    path: Path
    result: ValidationResult
    by_accuracy: bool  # the gates judge accuracy against labels, so trials are compared on it

    @property
    def score(self) -> float:
        """Accuracy when the gates are on accuracy and the data has labels, else the worst output cosine."""
        if self.by_accuracy and self.result.accuracy_candidate is not None:
            return self.result.accuracy_candidate
        return self.result.worst_cosine if self.result.worst_cosine is not None else -math.inf


@dataclass
class Search:
    """Inputs of the loop: how to quantize with exclusions, and how to read calibration data."""

    context: RunContext
    float_path: Path
    quantize: Callable[[list[str], Path], None]  # (excluded node names, output path)
    reader: Callable[[], DatasetReader]
    base_excluded: list[str]
    max_trials: int
    max_time: float
    step: int
    trials: list[Trial] = field(default_factory=list)


def rank_nodes(search: Search, qdq_path: Path) -> list[tuple[str, float]]:
    """(node name, SQNR dB of its quantized input) for quantizable nodes, worst first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    work = qdq_path.parent
    activations = {}
    for name, path in (("float", search.float_path), ("qdq", qdq_path)):
        augmented = work / f"{name}_augmented.onnx"
        modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[name] = collect_activations(str(augmented), search.reader())
    errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
    graph = onnx.load(str(search.float_path), load_external_data=False).graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    ranked: dict[str, float] = {}
    for tensor, error in errors.items():
        sqnr = float(error.get("qdq_err", math.inf))
        for node in consumers.get(tensor, []):
            if node not in search.base_excluded:
                ranked[node] = min(sqnr, ranked.get(node, math.inf))
    return sorted(ranked.items(), key=lambda item: item[1])


def _judge(search: Search, path: Path) -> ValidationResult:
    from onnxopt.validation import compare

    context = search.context
    return compare(context.reference_path, path, context.dataset, context.gates, latency_runs=0)


def run(search: Search, first: Path) -> tuple[Trial, dict]:
    """Search from the fully quantized model ``first``; return the best trial and what to report."""
    start = time.monotonic()
    by_accuracy = search.context.gates is not None and search.context.gates.max_accuracy_drop is not None
    best = Trial(list(search.base_excluded), first, _judge(search, first), by_accuracy)
    search.trials.append(best)
    ranking = rank_nodes(search, first) if not best.result.passed else []
    reasons: dict[str, str] = {}
    excluded = list(search.base_excluded)
    while not best.result.passed and len(search.trials) <= search.max_trials and time.monotonic() - start < search.max_time:
        batch = [(node, sqnr) for node, sqnr in ranking if node not in excluded][: search.step]
        if not batch:
            break
        for node, sqnr in batch:
            reasons[node] = f"SQNR {sqnr:.1f} dB, trial {len(search.trials)}"
        excluded = excluded + [node for node, _ in batch]
        path = first.with_name(f"trial{len(search.trials)}.onnx")
        search.quantize(excluded, path)
        trial = Trial(excluded, path, _judge(search, path), by_accuracy)
        search.trials.append(trial)
        if _better(trial, best):
            best = trial
    report = {
        "trials": [
            {"float_nodes": len(t.excluded), "passed": t.result.passed, "score": round(t.score, 6)} for t in search.trials
        ],
        "kept_float_by_search": {node: reasons[node] for node in best.excluded if node in reasons},
        "gates_met": best.result.passed,
    }
    if not best.result.passed:
        report["stopped"] = (f"no trial met the gates within max_trials={search.max_trials}, "
                             f"max_time={search.max_time:g}s; best: {best.result.failure_reason()}")  # fmt: skip
    return best, report


def _better(trial: Trial, best: Trial) -> bool:
    if trial.result.passed != best.result.passed:
        return trial.result.passed
    if trial.result.passed:  # both pass: the first to pass has the fewest float nodes
        return False
    return trial.score > best.score
