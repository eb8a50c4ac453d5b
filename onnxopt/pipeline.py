"""A run: recipe -> configured passes -> each pass applied, checked, validated, kept or rolled back -> report.

Every pass works on a clone of the best model so far, so a pass that raises, breaks the graph or fails a
gate costs nothing but its own step: the previous model is kept (``on_failure = "rollback"``, the
default) or the run stops there (``"stop"``), and in both cases the best model so far is written. Each
candidate is saved into the run's temporary folder and must pass onnx's checker, load in onnxruntime at
``ORT_ENABLE_ALL`` and meet the gates against the original model before it is kept. The file finally
written is validated again, latency and size included: the report describes the file on disk.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxopt import model_io, summary
from onnxopt.context import RunContext
from onnxopt.data import Dataset
from onnxopt.errors import EXIT_GATE_FAILED, ModelError, OnnxoptError, PluginError, UsageError
from onnxopt.passes import ConfiguredPass, PassRegistry
from onnxopt.plugins import PluginManager, get_plugin_manager
from onnxopt.recipe import Recipe
from onnxopt.report import FAILED, KEPT, NOT_RUN, ROLLED_BACK, UNCHANGED, ModelFigures, Report, StepReport
from onnxopt.validation import LiveReference, RecordedReference, Reference, ValidationResult, compare, is_large, open_session

#: Samples of random data used to compare each pass's output with the original when no data is given.
FALLBACK_SYNTHETIC_SAMPLES = 16


def load_model(pm: PluginManager, path: str | Path, **options: Any) -> ir.Model:
    """Load a model through the loader plugins (the host's ONNX loader answers last)."""
    try:
        model = pm.hook.onnxopt_load_model(path=str(path), options=options)
    except OnnxoptError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if model is None:
        raise ModelError(f"{path}: no loader plugin can read this file")
    return model


def open_dataset(pm: PluginManager, source: str, model: ir.Model, recipe: Recipe) -> Dataset:
    options = {"shapes": recipe.shapes, "seed": recipe.seed, "batch_size": recipe.batch_size}
    dataset = pm.hook.onnxopt_open_dataset(source=source, model=model, options=options)
    if dataset is None:
        raise UsageError(f"{source}: no dataset plugin can read it")
    return dataset


def same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()


def _figures(model: ir.Model, path: Path | None) -> ModelFigures:
    size = model_io.file_size(path) if path is not None and path.suffix == ".onnx" else None
    return ModelFigures(summary.count_nodes(model), summary.count_parameters(model), size)


class Run:
    """One optimize run; use :func:`optimize` unless you need the pieces."""

    def __init__(self, recipe: Recipe, pm: PluginManager, *, quiet: bool = True) -> None:
        self.recipe = recipe
        self.pm = pm
        self.quiet = quiet
        self.reference: Reference | None = None  # opened once per call, shared by every comparison
        self.registry = PassRegistry.from_plugins(pm)
        self.steps: list[ConfiguredPass] = [self.registry.configure(s.name, s.options) for s in recipe.passes]
        if not self.steps:
            raise UsageError("no passes to run: give --pass NAME or a recipe with [[passes]]")
        needing = [step.label for step in self.steps if step.spec.requires_data(step.options)]
        if needing and recipe.data is None:
            raise UsageError(f"pass {needing[0]!r} needs data: give --data calib.npz (or a folder, or synthetic:N)")

    def __call__(self, source: str | Path, output: str | Path | None, *, in_place: bool = False) -> Report:
        source = Path(source)
        if output is not None:
            output = Path(output)
            if same_file(source, output) and not in_place:
                raise UsageError(f"{output}: output would overwrite the input; pass --in-place to allow it")
            model_io.check_writable(output)
        model = load_model(self.pm, source)
        # a model that came with external data leaves with it, whatever its passes did to tensor sizes
        external = self.recipe.external_data
        if external is None and model_io.has_external_tensors(model):
            external = True
        with tempfile.TemporaryDirectory(prefix="onnxopt-") as workdir:
            context = RunContext(
                self.pm, self.registry, Path(workdir), shapes=self.recipe.shapes, gates=self.recipe.gates,
                seed=self.recipe.seed, quiet=self.quiet,
            )  # fmt: skip
            context.reference_path = self._reference_file(model, source, context)
            # An input onnxruntime cannot load fails here, before any pass. The session is kept for every
            # comparison, except for a large model: onnxruntime holds a copy of its weights, which would sit
            # beside everything the passes need (a quantizer loads the whole model too); its outputs on the
            # data are recorded once instead, and the session closed.
            large = is_large(context.reference_path)
            self.reference = None if large else LiveReference(open_session(context.reference_path, threads=self.recipe.threads),
                                                              context.reference_path)  # fmt: skip
            report = Report(str(source), None, _figures(model, context.reference_path))
            context.dataset = self._dataset(model, report)
            if large:  # recorded on the run's data, which only exists now
                self.reference = RecordedReference(
                    context.reference_path, context.dataset, self.recipe.threads, self.recipe.latency_runs, context
                )
            best = model
            for index, step in enumerate(self.steps):
                if report.exit_code and self.recipe.on_failure == "stop":
                    report.steps.append(StepReport(step.label, step.spec.plugin, NOT_RUN))
                    continue
                best = self._apply(index, step, best, context, report)
            if output is not None:
                # validated as staged, before it replaces anything: the report describes the file this run
                # wrote even when another run writes the same path, and --in-place compares with the input
                model_io.save(best, output, external_data=external,
                              before_replace=lambda staged: self._final_validation(staged, context, report))  # fmt: skip
                report.output = report.final.candidate = str(output)
            self.pm.hook.onnxopt_report(report=report, context=context)
        return report

    def _reference_file(self, model: ir.Model, source: Path, context: RunContext) -> Path:
        """The original as an ONNX file to validate against: the input itself, or its conversion."""
        if source.suffix == ".onnx":
            return source
        return model_io.save(model.clone(), context.workdir / "reference.onnx")

    def _dataset(self, model: ir.Model, report: Report) -> Dataset | None:
        if self.recipe.data is not None:
            return open_dataset(self.pm, self.recipe.data, model, self.recipe)
        try:
            dataset = open_dataset(self.pm, f"synthetic:{FALLBACK_SYNTHETIC_SAMPLES}", model, self.recipe)
        except OnnxoptError as exc:
            report.notes.append(f"no --data and no synthetic inputs ({exc}): outputs are not compared, only loaded")
            return None
        report.notes.append(f"no --data: passes are checked on {dataset.name} random inputs")
        return dataset

    def _fail(self, report: Report, step: StepReport, status: str, exit_code: int, message: str) -> None:
        step.status = status
        step.message = message
        if not report.exit_code:
            report.exit_code = exit_code
            report.message = f"pass {step.name!r} ({step.plugin}): {message}"

    def _apply(self, index: int, step: ConfiguredPass, best: ir.Model, context: RunContext, report: Report) -> ir.Model:
        """Run one pass on a clone of ``best``; return the model to carry on with."""
        entry = StepReport(step.label, step.spec.plugin, KEPT)
        report.steps.append(entry)
        failed_status = FAILED if self.recipe.on_failure == "stop" else ROLLED_BACK
        context.stats = entry.stats
        start = time.perf_counter()
        try:
            result = self.pm.hook.onnxopt_run_pass(spec=step.spec, options=step.options, model=best.clone(), context=context)
            if not isinstance(result, ir.passes.PassResult) or not isinstance(result.model, ir.Model):
                raise TypeError(f"returned {type(result).__name__}, not an onnx_ir PassResult with a Model")
        except OnnxoptError as exc:
            entry.seconds = time.perf_counter() - start
            self._fail(report, entry, failed_status, exc.exit_code, str(exc))
            return best
        except Exception as exc:
            entry.seconds = time.perf_counter() - start
            error = PluginError(step.spec.plugin, f"{type(exc).__name__}: {exc}")
            self._fail(report, entry, failed_status, error.exit_code, f"raised {type(exc).__name__}: {exc}")
            return best
        entry.seconds = time.perf_counter() - start
        entry.modified = bool(result.modified)
        if not result.modified:
            entry.status = UNCHANGED
            entry.figures = _figures(best, None)
            return best
        candidate = result.model
        staged = context.workdir / f"step{index + 1}.onnx"
        try:
            model_io.save(candidate, staged)
            model_io.check_proto(model_io.read_proto(staged), f"output of pass {step.spec.name!r}")
        except (ModelError, ValueError) as exc:
            self._fail(report, entry, failed_status, PluginError.exit_code, f"produced an invalid model: {exc}")
            return best
        entry.figures = _figures(candidate, staged)
        verdict = self._validate_step(staged, context)
        entry.validation = verdict
        if verdict is not None and not verdict.passed:
            loads = next((c for c in verdict.checks if c.name == "loads"), None)
            if loads is not None and not loads.passed:
                self._fail(report, entry, failed_status, PluginError.exit_code, f"produced a model onnxruntime cannot load: {loads.message}")
            else:
                self._fail(report, entry, failed_status, EXIT_GATE_FAILED, f"validation failed: {verdict.failure_reason()}")
            return best
        return candidate

    def _validate_step(self, staged: Path, context: RunContext) -> ValidationResult | None:
        if not self.recipe.validate_each_pass:
            return None
        return compare(
            context.reference_path, staged, context.dataset, self.recipe.gates, latency_runs=0,
            threads=self.recipe.threads, context=context, opened=self.reference,
        )  # fmt: skip

    def _final_validation(self, output: Path, context: RunContext, report: Report) -> None:
        report.final = compare(
            context.reference_path, output, context.dataset, self.recipe.gates, latency_runs=self.recipe.latency_runs,
            threads=self.recipe.threads, context=context, opened=self.reference,
        )  # fmt: skip
        if not report.final.passed and not report.exit_code:
            report.exit_code = EXIT_GATE_FAILED
            report.message = f"the written model fails validation: {report.final.failure_reason()}"


def optimize(
    source: str | Path,
    output: str | Path | None,
    recipe: Recipe,
    *,
    plugins: Sequence[str] = (),
    quiet: bool = True,
    in_place: bool = False,
) -> Report:
    """Run ``recipe`` on the model at ``source`` and write the best result to ``output``."""
    pm = get_plugin_manager(plugins)
    return Run(recipe, pm, quiet=quiet)(source, output, in_place=in_place)

