"""The accuracy-aware loop: put the nodes whose quantization hurts the output most back to float until the
run's gates hold.

Ranking, in two steps (written here; onnxruntime gives the first, nothing gives the second):

1. onnxruntime's ``qdq_loss_debug`` runs the float and the QDQ model with every intermediate tensor exposed and
   gives each quantized activation the signal-to-quantization-noise ratio of its Q/DQ pair. SQNR alone did not
   pick the right nodes on the tiny transformer (a low-SQNR tensor can matter little to the output), so it only
   preselects the ``candidates`` worst nodes.
2. Each candidate is then measured by what reaches the OUTPUT: in a copy of the QDQ model where every other
   node reads its float inputs and float weights again (their Q/DQ pairs bypassed), only that node is
   quantized, and the copy is scored on the validation data (accuracy when the gates judge accuracy, else the worst
   output cosine). Measuring each node alone separates small errors that, measured by taking one node out of the fully
   quantized model, drowned in the others' (tiny transformer: every single exclusion moved the cosine by < 1e-4). No
   re-calibration, one validation run per candidate; ranking stops at half of ``max_time``, unmeasured candidates follow
   in SQNR order.

Nodes are then excluded ``step`` at a time in that order; every trial is quantized again and judged by the
same validation and gates as the pipeline (no second code path), on ``validation_data`` when given, else on
the run's data. The loop stops when the gates hold or ``max_trials`` / ``max_time`` run out, and always returns
the best model it saw — the one that passes with the fewest float nodes, else the most accurate — with every
trial and the reason each node stayed float in the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    from onnxopt import Dataset, Reference, RunContext, ValidationResult

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
        return score(self.result, self.by_accuracy)


def score(result: ValidationResult, by_accuracy: bool) -> float:
    if by_accuracy and result.accuracy_candidate is not None:
        return result.accuracy_candidate
    return result.worst_cosine if result.worst_cosine is not None else -math.inf


@dataclass
class Search:
    """Inputs of the loop: how to quantize with exclusions, how to read calibration data, what to judge on."""

    context: RunContext
    float_path: Path
    quantize: Callable[[list[str], Path], None]  # (excluded node names, output path)
    reader: Callable[[], DatasetReader]
    base_excluded: list[str]
    max_trials: int
    max_time: float
    step: int
    validation: Dataset
    candidates: int = 32
    trials: list[Trial] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _reference: Reference | None = None

    @property
    def by_accuracy(self) -> bool:
        gates = self.context.gates
        return gates is not None and gates.max_accuracy_drop is not None and self.validation.labels is not None

    def judge(self, path: Path) -> ValidationResult:
        from onnxopt import compare

        context = self.context
        if self._reference is None:  # the run's session, or for a model too large to hold twice, recorded once
            self._reference = context.reference(self.validation)
        return compare(
            context.reference_path, path, self.validation, context.gates, latency_runs=0, opened=self._reference
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def rank_by_sqnr(search: Search, qdq_path: Path) -> list[tuple[str, float]]:
    """(node name, SQNR dB of its worst quantized input) for quantized nodes, worst first."""
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
    with np.errstate(divide="ignore", invalid="ignore"):  # a tensor the QDQ model reproduces exactly: 0 / 0
        errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
    graph = onnx.load(str(search.float_path), load_external_data=False).graph
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    ranked: dict[str, float] = {}
    for tensor, error in errors.items():
        sqnr = float(error.get("qdq_err", math.inf))
        sqnr = math.inf if math.isnan(sqnr) else sqnr  # no quantization error at all
        for node in consumers.get(tensor, []):
            if node not in search.base_excluded:
                ranked[node] = min(sqnr, ranked.get(node, math.inf))
    return sorted(ranked.items(), key=lambda item: item[1])


def float_rewiring(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> dict[str, list[tuple[int, str]]]:
    """For each quantized node: (input slot, the float tensor it read before quantization), weights included.

    onnxruntime's quantizer keeps node names and input slots, putting a DequantizeLinear in front, so the float
    model's node of the same name says what each slot read. The float weights it needs are copied into ``qdq``.
    """
    float_nodes = {node.name: node for node in float_model.graph.node}
    rewiring: dict[str, list[tuple[int, str]]] = {}
    for node in qdq.graph.node:
        before = float_nodes.get(node.name)
        if before is None or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        slots = [(i, old) for i, (new, old) in enumerate(zip(node.input, before.input)) if new != old]
        if slots:
            rewiring[node.name] = slots
    wanted = {name for slots in rewiring.values() for _, name in slots}
    present = {init.name for init in qdq.graph.initializer}
    qdq.graph.initializer.extend(i for i in float_model.graph.initializer if i.name in wanted - present)
    return rewiring


def rank_by_output(search: Search, qdq_path: Path, base: float) -> list[tuple[str, str]]:
    """(node, reason) worst first: SQNR preselects, then each candidate is measured at the output as the only
    quantized node (every other node reads its float inputs and weights again)."""
    sqnr = rank_by_sqnr(search, qdq_path)
    model = onnx.load(str(qdq_path))
    rewiring = float_rewiring(model, onnx.load(str(search.float_path)))
    nodes = {node.name: node for node in model.graph.node}
    quantized_inputs = {name: list(nodes[name].input) for name in rewiring}
    for name, slots in rewiring.items():  # every node reads float inputs ...
        for slot, float_name in slots:
            nodes[name].input[slot] = float_name
    candidates = [(name, db) for name, db in sqnr if name in rewiring][: search.candidates]
    metric = "accuracy" if search.by_accuracy else "worst cosine"
    measured: list[tuple[float, str, str]] = []
    unmeasured: list[tuple[str, str]] = []
    probe = qdq_path.with_name("probe.onnx")
    for name, db in candidates:
        if search.elapsed() > search.max_time / 2:
            unmeasured.append((name, f"SQNR {db:.1f} dB (not measured: half of max_time spent ranking)"))
            continue
        node = nodes[name]
        floated = list(node.input)
        node.input[:] = quantized_inputs[name]  # ... but this one
        onnx.save(model, str(probe))
        node.input[:] = floated
        alone = score(search.judge(probe), search.by_accuracy)
        reason = f"output {metric} {alone:.6g} with only this node quantized (all: {base:.6g}); SQNR {db:.1f} dB"
        measured.append((alone, name, reason))
    measured.sort(key=lambda item: item[0])
    return [(name, reason) for _, name, reason in measured] + unmeasured


def run(search: Search, first: Path) -> tuple[Trial, dict]:
    """Search from the fully quantized model ``first``; return the best trial and what to report."""
    best = Trial(list(search.base_excluded), first, search.judge(first), search.by_accuracy)
    search.trials.append(best)
    ranking = rank_by_output(search, first, best.score) if not best.result.passed else []
    reasons: dict[str, str] = {}
    excluded = list(search.base_excluded)
    while not best.result.passed and len(search.trials) <= search.max_trials and search.elapsed() < search.max_time:
        batch = [(node, reason) for node, reason in ranking if node not in excluded][: search.step]
        if not batch:
            break
        for node, reason in batch:
            reasons[node] = f"{reason}; excluded in trial {len(search.trials)}"
        excluded = excluded + [node for node, _ in batch]
        path = first.with_name(f"trial{len(search.trials)}.onnx")
        search.quantize(excluded, path)
        trial = Trial(excluded, path, search.judge(path), search.by_accuracy)
        search.trials.append(trial)
        if _better(trial, best):
            best = trial
    report = {
        "ranked_by_output": sum("only this node" in reason for _, reason in ranking),
        "trials": [
            {"float_nodes": len(t.excluded), "passed": t.result.passed, "score": round(t.score, 6)}
            for t in search.trials
        ],
        "kept_float_by_search": {node: reasons[node] for node in best.excluded if node in reasons},
        "gates_met": best.result.passed,
        "judged_on": search.validation.name,
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
