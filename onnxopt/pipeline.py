"""A run: recipe -> configured passes -> each pass applied, checked, validated, kept or rolled back -> report.

Every pass works on a clone of the best model so far, so a pass that raises, breaks the graph or fails a
gate costs nothing but its own step: the previous model is kept (``on_failure = "rollback"``, the
default) or the run stops there (``"stop"``), and in both cases the best model so far is written. Each
candidate is saved into the run's temporary folder and must pass onnx's checker, load in onnxruntime at
``ORT_ENABLE_ALL`` and meet the gates against the original model before it is kept. The file finally
written is validated again, latency and size included: the report describes the file on disk.

Data has two roles: ``data`` is what passes calibrate or train on, ``val`` what the verdict is judged on
(default: ``data``). Without either, the verdict is judged on synthetic inputs at shapes derived until the
original runs (:mod:`onnxopt.synthetic`); when none run, or with ``validate = false``, the model is written
and the run ends "not validated" (exit 4): exit 0 always means compared and within the gates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import onnx_ir as ir

from onnxopt import model_io, summary
from onnxopt.context import RunContext
from onnxopt.data import Dataset
from onnxopt.errors import (
    EXIT_GATE_FAILED,
    EXIT_NOT_VALIDATED,
    DataError,
    ModelError,
    OnnxoptError,
    PluginError,
    UsageError,
)
from onnxopt.gates import RETRAINED, SAME_MODEL, DefaultVerdict
from onnxopt.metrics import MetricRequest, parse_request
from onnxopt.passes import ConfiguredPass
from onnxopt.recipe import DEFAULT_LATENCY_RUNS, Recipe
from onnxopt.report import FAILED, KEPT, NOT_RUN, ROLLED_BACK, UNCHANGED, ModelFigures, Report, StepReport
from onnxopt.session import Session
from onnxopt.synthetic import runnable
from onnxopt.validation import (
    CandidateRun,
    LiveReference,
    RecordedReference,
    Reference,
    ValidationResult,
    compare,
    is_large,
    open_reference,
    run_candidate,
)

#: Samples of random data used to compare each pass's output with the original when no data is given.
FALLBACK_SYNTHETIC_SAMPLES = 16
#: A run that retrains with no ``val`` holds out this share of ``data`` for its verdict (:meth:`Run._hold_out`), when
#: that makes at least VERDICT_MIN_ROWS rows: a verdict on fewer would turn on a row or two.
VERDICT_FRACTION, VERDICT_MIN_ROWS = 0.1, 16
_HOLD_OUT_SALT = 11  # the held-out rows' draw: apart from any pass's own


def open_dataset(session: Session, source: str, model: ir.Model, recipe: Recipe) -> Dataset:
    """``source`` opened for ``model`` with the recipe's shapes, seed and batch size."""
    return session.open_dataset(source, model, shapes=recipe.shapes, seed=recipe.seed, batch_size=recipe.batch_size)


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

    def __init__(self, recipe: Recipe, session: Session) -> None:
        self.recipe = recipe
        self.session = session
        self.reference: Reference | None = None  # opened once per call, shared by every comparison
        self.judge_data: Dataset | None = None  # what every comparison runs on (None: nothing can be compared)
        # the best model's staged file (self-contained) and its comparison, session open: the written file is a
        # byte copy of it, judged on these outputs (None: the original is best, or its file has a data file beside)
        self.best_file: Path | None = None
        self.best_run: CandidateRun | None = None
        self.latency_may_change = False  # whether a kept pass may change how fast onnxruntime runs the model
        self.retrained = False  # whether a kept pass retrained the model (the verdict then judges agreement)
        self.held_out = False  # whether the verdict's rows were held out of the data the passes read
        self.metrics: list[MetricRequest] = [parse_request(text) for text in recipe.metrics]
        session.metrics.check(self.metrics)  # an unknown metric fails before any work
        self.steps: list[ConfiguredPass] = [session.passes.configure(s.name, s.options) for s in recipe.passes]
        if not self.steps:
            raise UsageError("no passes to run: give --pass NAME or a recipe with [[passes]]")
        needing = [step.label for step in self.steps if step.spec.requires_data(step.options)]
        if needing and recipe.data is None:
            raise UsageError(f"pass {needing[0]!r} needs data: give --data calib.npz (or a folder, or synthetic:N)")
        # what the passes before a retraining pass leave is only its starting point (a pruned student): not judged
        self.last_retraining = max((i for i, s in enumerate(self.steps) if s.spec.may_retrain(s.options)), default=-1)

    def __call__(self, source: str | Path, output: str | Path | None, *, in_place: bool = False) -> Report:
        source = Path(source)
        if output is not None:
            output = Path(output)
            if same_file(source, output) and not in_place:
                raise UsageError(f"{output}: output would overwrite the input; pass --in-place to allow it")
            model_io.check_writable(output)
        self.best_file, self.best_run, self.latency_may_change, self.retrained = None, None, False, False
        load_start = time.perf_counter()
        model = self.session.load(source)
        load_seconds = time.perf_counter() - load_start
        # a model that came with external data leaves with it, whatever its passes did to tensor sizes
        external = self.recipe.external_data
        if external is None and model_io.has_external_tensors(model):
            external = True
        with self.session.context(shapes=self.recipe.shapes, gates=self.recipe.gates, seed=self.recipe.seed) as context:
            context.costs.add("load", load_seconds)
            context.reference_path = self._reference_file(model, source, context)
            # An input onnxruntime cannot load fails here, before any pass. onnxruntime holds a copy of the
            # weights, which would sit beside everything the passes need (a quantizer loads the whole model
            # too): the reference's outputs on the judging data are kept and its session closed while passes
            # work (LiveReference.record; reopened for latency); a large model's are recorded before any
            # candidate is opened, and its latency is not interleaved (RecordedReference).
            large = is_large(context.reference_path)
            with context.costs.phase("onnxruntime session (reference)"):
                self.reference = None if large else LiveReference(
                    context.reference_path, self.recipe.threads, spill_to=context.workdir / "reference-outputs"
                )  # fmt: skip
            if isinstance(self.reference, LiveReference):
                context.live_reference = self.reference  # passes that compare (a search) share it
            report = Report(str(source), None, _figures(model, context.reference_path))
            with context.costs.phase("data"):
                context.dataset = self._open(model, self.recipe.data)
                held_out = self._hold_out(context)
                self.held_out = held_out is not None
                self.judge_data = held_out or self._judge_data(model, context, report)
                if held_out is not None:
                    report.notes.append(f"judged on {describe_data(held_out, role='data')}: rows no pass read")
            if context.dataset is None:  # passes that can use data get what the verdict runs on
                context.dataset = self.judge_data
            if large and self.judge_data is not None:  # recorded on the judging data, which only exists now
                self.reference = RecordedReference(
                    context.reference_path,
                    self.judge_data,
                    self.recipe.threads,
                    DEFAULT_LATENCY_RUNS if self.recipe.latency_runs is None else self.recipe.latency_runs,
                    context,
                )
            if isinstance(self.reference, LiveReference) and self.judge_data is not None:
                with context.costs.phase("reference runs (recorded)"):  # all kept: the session closes meanwhile
                    self.reference.record(self.judge_data)
            best = model
            for index, step in enumerate(self.steps):
                if report.exit_code and self.recipe.on_failure == "stop":
                    report.steps.append(StepReport(step.label, step.spec.plugin, NOT_RUN))
                    continue
                best = self._apply(index, step, best, context, report)
            if output is not None:
                # validated as staged, before it replaces anything: the report describes the file this run
                # wrote even when another run writes the same path, and --in-place compares with the input
                with context.costs.phase("save (with the final validation)"):
                    self._save(best, output, external, context, report)
                report.output = str(output)
                if report.final is not None:
                    report.final.candidate = str(output)
            if self.retrained and report.final is not None and report.final.compared:
                self._note_retrained(report)
            report.costs = context.costs.phases
            self.session.hook.onnxopt_report(report=report, context=context)
        return report

    def _save(self, best: ir.Model, output: Path, external: bool | None, context: RunContext, report: Report) -> None:
        """Write ``best`` (validated as staged): the bytes of its staged file when that is what a save would write."""
        copy = self.best_file is not None and not (
            external if external is not None else model_io.writes_external_data(best)
        )
        run = self.best_run if copy else None

        def validate(staged: Path) -> None:
            self._final_validation(staged, context, report, run)

        if copy:
            model_io.save_copy(self.best_file, output, before_replace=validate)
        else:
            model_io.save(best, output, external_data=external, before_replace=validate)

    def _reference_file(self, model: ir.Model, source: Path, context: RunContext) -> Path:
        """The original as an ONNX file to validate against: the input itself, or its conversion."""
        if source.suffix == ".onnx":
            return source
        return model_io.save(model.clone(), context.workdir / "reference.onnx")

    def _open(self, model: ir.Model, source: str | None) -> Dataset | None:
        return open_dataset(self.session, source, model, self.recipe) if source is not None else None

    def _hold_out(self, context: RunContext) -> Dataset | None:
        """The verdict's rows of a run that retrains with no ``val``: :data:`VERDICT_FRACTION` of ``data``, held out
        of what the passes read (``context.dataset`` keeps the rest), so the student is never judged on the rows
        it was trained or early-stopped on. None when there is nothing to hold out."""
        dataset = context.dataset
        if self.last_retraining < 0 or self.recipe.val is not None or not self.recipe.validate or dataset is None:
            return None
        held = round(dataset.num_samples * VERDICT_FRACTION)
        parts = dataset.split(held, context.rng(_HOLD_OUT_SALT)) if held >= VERDICT_MIN_ROWS else None
        if parts is None:
            return None
        context.dataset, held = parts
        return held

    def _judge_data(self, model: ir.Model, context: RunContext, report: Report) -> Dataset | None:
        """``val``, else ``data``, else synthetic inputs the original runs on; None when nothing is compared."""
        if not self.recipe.validate:
            report.not_validated = "validation was switched off (--no-validate)"
            return None
        if self.recipe.val is not None:
            dataset = self._open(model, self.recipe.val)
        elif context.dataset is not None:
            dataset = context.dataset
        else:
            try:
                dataset = judge_inputs(model, self.reference, self.recipe)
            except DataError as exc:
                report.not_validated = str(exc)
                report.notes.append(f"not validated: {exc}")
                return None
        report.notes.append(f"judged on {describe_data(dataset, role='val' if self.recipe.val else 'data')}")
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
            result = self.session.run_pass(step.spec, step.options, best.clone(), context)
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
        context.costs.add(f"pass {step.label}", entry.seconds)
        entry.modified = bool(result.modified)
        if not result.modified:
            entry.status = UNCHANGED
            entry.figures = _figures(best, None)
            return best
        candidate = result.model
        staged = context.workdir / f"step{index + 1}.onnx"
        try:
            with context.costs.phase("save (each pass)"):
                model_io.save(candidate, staged)
            with context.costs.phase("checker (each pass)"):
                model_io.check_proto(model_io.read_proto(staged), f"output of pass {step.spec.name!r}")
        except (ModelError, ValueError) as exc:
            self._fail(report, entry, failed_status, PluginError.exit_code, f"produced an invalid model: {exc}")
            return best
        entry.figures = _figures(candidate, staged)
        retrains = step.spec.may_retrain(step.options)
        if index < self.last_retraining:
            report.notes.append(f"pass {step.label!r} not judged on its own: "
                                f"{self.steps[self.last_retraining].label!r} retrains what it leaves")  # fmt: skip
        defaults = self._defaults(context, retrains)
        run = self._run_step(staged, context, defaults) if index >= self.last_retraining else None
        verdict = None if run is None else self._step_verdict(run, staged, context, defaults)
        entry.validation = verdict
        if verdict is not None and not verdict.passed:
            loads = next((c for c in verdict.checks if c.name == "loads"), None)
            if loads is not None and not loads.passed:
                self._fail(
                    report,
                    entry,
                    failed_status,
                    PluginError.exit_code,
                    f"produced a model onnxruntime cannot load: {loads.message}",
                )
            else:
                self._fail(report, entry, failed_status, EXIT_GATE_FAILED,
                           f"validation failed: {verdict.failure_reason()}; {advice(verdict)}")  # fmt: skip
            return best
        self_contained = not staged.with_name(model_io.data_file_name(staged)).exists()
        self.best_file = staged if self_contained else None
        # a large model's candidate session is not kept: it would sit beside the next pass's work
        self.best_run = run if self_contained and isinstance(self.reference, LiveReference) else None
        self.latency_may_change |= step.spec.may_change_latency(step.options)
        self.retrained |= retrains
        return candidate

    def _note_retrained(self, report: Report) -> None:
        """Say how a retrained model was judged, and on which rows."""
        if self.recipe.default_gates:
            report.notes.append(f"judged as a retrained model: {RETRAINED.description}, where no gate is given")
        if self.recipe.val is None and self.recipe.data is not None and not self.held_out:
            report.notes.append(f"the verdict was judged on the data the model was retrained on (--data): none "
                                f"could be held out (a tenth would be under {VERDICT_MIN_ROWS} rows, or cut the "
                                "batch the model fixes); pass --val for a held-out verdict")  # fmt: skip

    def _defaults(self, context: RunContext, retrains: bool = False) -> DefaultVerdict | None:
        """The default verdict for a model this run made (``retrains``: by the step being judged)."""
        if not self.recipe.default_gates:
            return None
        if self.retrained or retrains:
            return replace(RETRAINED, not_class_scores=frozenset(context.not_class_scores))
        return SAME_MODEL

    def _compare(self, path: Path, context: RunContext, latency_runs: int) -> ValidationResult:
        return compare(
            context.reference_path, path, self.judge_data, self.recipe.gates, metrics=self.metrics,
            defaults=self._defaults(context), latency_runs=latency_runs, threads=self.recipe.threads, context=context,
            opened=self.reference,
        )  # fmt: skip

    def _run_step(self, staged: Path, context: RunContext, defaults: DefaultVerdict | None) -> CandidateRun | None:
        """A pass's result run and compared against the original (None: each-pass validation is off)."""
        if not self.recipe.validate_each_pass or not self.recipe.validate:
            return None
        reference = self.reference or open_reference(
            context.reference_path, self.judge_data, threads=self.recipe.threads, context=context
        )
        return run_candidate(
            context.reference_path, staged, reference, self.judge_data, self.recipe.gates, metrics=self.metrics,
            defaults=defaults, threads=self.recipe.threads, context=context,
        )  # fmt: skip

    def _step_verdict(
        self, run: CandidateRun, staged: Path, context: RunContext, defaults: DefaultVerdict | None
    ) -> ValidationResult:
        if run.session is None:
            return run.measured
        return run.verdict(staged, self.judge_data, self.recipe.gates, defaults=defaults, context=context)

    def _final_latency_runs(self, report: Report) -> int:
        """The latency rounds asked for, or by default: none when no kept pass can change what onnxruntime runs
        (only weight values changed) and no latency gate is set."""
        if self.recipe.latency_runs is not None:
            return self.recipe.latency_runs
        if self.latency_may_change or self.recipe.gates.max_latency_ratio is not None:
            return DEFAULT_LATENCY_RUNS
        report.notes.append("latency not measured: no kept pass changes what onnxruntime runs, only weight values "
                            "(--latency-runs N measures it)")  # fmt: skip
        return 0

    def _final_validation(self, output: Path, context: RunContext, report: Report, run: CandidateRun | None) -> None:
        """The written file judged: on ``run``'s outputs when it is a byte copy of that candidate, else run anew."""
        if self.recipe.validate:
            latency_runs = self._final_latency_runs(report)
            if run is not None:
                report.final = run.verdict(output, self.judge_data, self.recipe.gates,
                                           defaults=self._defaults(context), latency_runs=latency_runs,
                                           context=context)  # fmt: skip
            else:
                report.final = self._compare(output, context, latency_runs)
        if report.exit_code:
            return
        if report.final is not None and not report.final.passed:
            report.exit_code = EXIT_GATE_FAILED
            report.message = f"the written model fails validation: {report.final.failure_reason()}"
        elif report.final is None or not report.final.compared:
            report.exit_code = EXIT_NOT_VALIDATED
            report.message = f"not validated: {report.not_validated}"


def advice(verdict: ValidationResult) -> str:
    """What to try after a pass failed its gates: the judge, the data, or the pass's own accuracy options."""
    tips = []
    if verdict.synthetic_data:
        tips.append("judge on real inputs (--val) rather than random ones")
    judged = {c.message.split(":")[0] for c in verdict.checks if c.name.startswith("metric:")}
    generic = {
        c.message.split(":")[0] for c in verdict.checks if not c.passed and c.name in ("cosine", "channel_cosine")
    } - judged  # an output a metric already judges failed the floor under it: no other metric to suggest
    if generic:
        tips.append(f"if {', '.join(sorted(generic))} serves a task, judge it by its metric (--metric OUTPUT=NAME)")
    tips.append("the pass's options that trade size for accuracy ('onnxopt passes')")
    return "try " + "; or ".join(tips)


def judge_inputs(model: ir.Model, reference: Reference | None, recipe: Recipe) -> Dataset:
    """Synthetic inputs the original really runs on (tried in onnxruntime when its session is open)."""

    def run(feed: dict) -> object:
        return reference.probe(feed) if isinstance(reference, LiveReference) else None

    return runnable(
        FALLBACK_SYNTHETIC_SAMPLES, model, run, shapes=recipe.shapes, seed=recipe.seed, batch_size=recipe.batch_size
    )


def describe_data(dataset: Dataset, role: str) -> str:
    """One line for the report: which set judged the verdict, and what it holds."""
    text = (
        f"{dataset.name} ({dataset.num_samples} samples, --{role})"
        if not dataset.synthetic
        else (f"{dataset.name} random inputs (no --data / --val)")
    )
    return text + (f": {dataset.description}" if dataset.description else "")


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
    return Run(recipe, Session(plugins, quiet=quiet))(source, output, in_place=in_place)
