"""The run report and its renderers: an aligned text table for people, JSON for pipelines.

The same objects back ``--json`` and the Python API, so a script reads exactly what a person sees.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from onnxopt.costs import Phase
from onnxopt.errors import EXIT_NOT_VALIDATED

if TYPE_CHECKING:  # at run time neither is imported: `onnxopt passes` renders tables without onnx_ir / onnxruntime
    from onnxopt.summary import ModelSummary
    from onnxopt.validation import ValidationResult

KEPT = "kept"
UNCHANGED = "unchanged"
ROLLED_BACK = "rolled back"
FAILED = "failed"
NOT_RUN = "not run"


@dataclass
class ModelFigures:
    """Size figures of a model at one point of the run."""

    nodes: int
    parameters: int
    bytes: int | None


@dataclass
class StepReport:
    """What one pass did."""

    name: str
    plugin: str
    status: str
    seconds: float = 0.0
    modified: bool = False
    figures: ModelFigures | None = None
    validation: ValidationResult | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


@dataclass
class Report:
    """The outcome of one ``optimize`` run."""

    input: str
    output: str | None
    original: ModelFigures
    steps: list[StepReport] = field(default_factory=list)
    final: ValidationResult | None = None
    exit_code: int = 0
    message: str | None = None
    notes: list[str] = field(default_factory=list)
    not_validated: str | None = None  # why nothing was compared, when nothing was
    costs: list[Phase] = field(default_factory=list)  # time and peak RSS per phase of the run

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def contents(self) -> str:
        """What the written file holds, e.g. "contains fold, quantize; prune rolled back"."""
        kept = [step.name for step in self.steps if step.status == KEPT]
        parts = [f"contains {', '.join(kept)}" if kept else "contains no pass's change (the original model)"]
        for status in (UNCHANGED, ROLLED_BACK, FAILED, NOT_RUN):
            names = [step.name for step in self.steps if step.status == status]
            if names:
                parts.append(f"{', '.join(names)} {status}")
        return "; ".join(parts)

    def json_derived(self) -> dict[str, Any]:
        return {"ok": self.ok, "validated": self.final is not None and self.final.compared, "contents": self.contents()}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        derived = getattr(obj, "json_derived", None)  # properties a pipeline reads beside the fields
        if derived is not None:
            data.update(_jsonable(derived()))
        return data
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


def to_json(obj: Any) -> str:
    """JSON for a report, a validation result, a model summary or a list of them."""
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False, default=str)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _validation_cell(result: ValidationResult | None) -> str:
    if result is None:
        return "-"
    if not result.passed:
        return "FAIL"
    cosine = result.worst_cosine
    return f"ok cos={cosine:.6f}" if cosine is not None else "ok"


def render_costs(report: Report) -> str:
    """What ``--verbose`` adds: each phase's count, wall seconds and the peak RSS reached by its end."""
    rows = [[p.name, p.count, round(p.seconds, 3), round(p.peak_rss_mib)] for p in report.costs]
    return table(["phase", "count", "seconds", "peak RSS MiB"], rows)


def render_report(report: Report) -> str:
    """The per-pass table, the final validation, and the verdict."""
    rows: list[list[Any]] = [
        [
            "(input)",
            "",
            "",
            None,
            report.original.nodes,
            report.original.parameters,
            human_bytes(report.original.bytes),
            "",
        ]
    ]
    for step in report.steps:
        fig = step.figures
        rows.append(
            [
                step.name,
                step.plugin,
                step.status,
                round(step.seconds, 3),
                fig.nodes if fig else None,
                fig.parameters if fig else None,
                human_bytes(fig.bytes) if fig else "-",
                _validation_cell(step.validation),
            ]
        )
    parts = [table(["pass", "plugin", "status", "seconds", "nodes", "params", "size", "validation"], rows)]
    for step in report.steps:
        if step.message:
            parts.append(f"{step.name}: {step.message}")
        if step.stats:
            parts.append(f"{step.name}:")
            parts.extend(_stats_lines(step.stats))
    if report.final is not None:
        parts.append("")
        parts.append(render_validation(report.final))
    parts.extend(f"note: {note}" for note in report.notes)
    written = f"written: {report.output} ({report.contents()})" if report.output else "nothing written"
    if report.ok:
        verdict = "OK"
    elif report.exit_code == EXIT_NOT_VALIDATED:
        verdict = f"NOT VALIDATED (exit {report.exit_code}): {report.message}"
    else:
        verdict = f"FAILED (exit {report.exit_code}): {report.message}"
    parts.append(f"{verdict} — {written}")
    return "\n".join(parts)


#: A stat longer than this prints as its size only; ``--json`` has it whole.
STAT_CHARS = 100


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    """A pass's counters as an indented two-column table; long lists and tables are summarised."""
    rows = []
    for key, value in stats.items():
        text = _cell(value) if not isinstance(value, (dict, list, tuple)) else json.dumps(_jsonable(value), default=str)
        if len(text) > STAT_CHARS and isinstance(value, (dict, list, tuple)):
            text = f"{len(value)} entries (see --json)"
        rows.append([key, text])
    return ["    " + line for line in table(["stat", "value"], rows).splitlines()[2:]]


def render_validation(result: ValidationResult) -> str:
    """Per-output comparison, accuracy, latency, size, and every gate's verdict."""
    rows = [
        [
            o.name,
            "x".join(map(str, o.shape or [])) or "-",
            o.max_abs,
            o.max_rel,
            o.cosine,
            o.worst_channel_cosine,
            o.worst_channel,
            o.top1_agreement,
            o.nonfinite_candidate,
        ]
        for o in result.outputs
    ]
    parts = [f"validation on {result.data} ({result.samples} samples)" + (
        f": {result.data_description}" if result.data_description else "")]  # fmt: skip
    if result.outputs:
        parts.append(
            table(
                ["output", "shape", "max_abs", "max_rel", "cosine", "worst_ch_cos", "worst_ch", "top1", "nan/inf"], rows
            )
        )
    elif not result.compared:
        parts.append("NOT VALIDATED: the outputs were not compared")
    if result.metrics:
        parts.append(table(["output", "metric", "value", "gate", "chosen", "what it measures"], [
            [m.output, m.metric, m.value, f">= {m.threshold:g}", "default" if m.default else "asked", m.summary]
            for m in result.metrics
        ]))  # fmt: skip
    if result.accuracy_reference is not None:
        parts.append(f"accuracy: reference {result.accuracy_reference:.4f}, candidate {result.accuracy_candidate:.4f}")
    if result.latency_ratio is not None:
        spread = (f", middle half {result.latency_spread[0]:.3f}x-{result.latency_spread[1]:.3f}x"
                  if result.latency_spread else "")  # fmt: skip
        parts.append(
            f"latency: {result.latency_ratio:.3f}x candidate / reference (median of "
            f"{f'{result.latency_rounds} paired runs' if result.latency_rounds else 'each model’s runs'}{spread}; "
            f"reference {result.latency_reference_ms:.3f} ms)"
        )
    if result.size_ratio is not None:
        parts.append(
            f"size: {result.size_ratio:.3f}x "
            f"({human_bytes(result.size_reference)} -> {human_bytes(result.size_candidate)})"
        )
    for check in result.checks:
        parts.append(f"  [{'pass' if check.passed else 'FAIL'}] {check.message}")
    parts.extend(f"note: {note}" for note in result.notes)
    return "\n".join(parts)


def render_summary(summary: ModelSummary, path: str) -> str:
    """What ``onnxopt inspect`` prints."""
    parts = [
        f"model: {path}",
        f"opset: {', '.join(f'{d} {v}' for d, v in summary.opset.items())}",
        f"inputs: {'; '.join(summary.inputs)}",
        f"outputs: {'; '.join(summary.outputs)}",
        f"nodes: {summary.nodes} ({summary.subgraphs} subgraphs)   parameters: {summary.parameters:,}   "
        f"file: {human_bytes(summary.file_bytes)} (external data included)   "
        f"tensor data: {human_bytes(summary.tensor_bytes)}",
        f"initializer dtypes: {', '.join(f'{k} {v}' for k, v in summary.dtypes.items()) or 'none'}",
        "",
        table(["op", "count"], [[op, count] for op, count in summary.ops.items()]),
    ]
    if summary.tensors:
        rows = [
            [
                t.name,
                t.dtype,
                "x".join(map(str, t.shape)) or "scalar",
                t.elements,
                human_bytes(t.bytes),
                round(t.sparsity, 4),
                t.unique_values if t.unique_exact else f">={t.unique_values}",
            ]
            for t in summary.tensors
        ]
        parts += ["", table(["initializer", "dtype", "shape", "elements", "size", "sparsity", "unique"], rows)]
    return "\n".join(parts)
