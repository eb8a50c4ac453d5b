"""The search loop: ask optuna for recipes, run them as trials, tell the results, ship the best.

The search process alone talks to the study (ask-and-tell); trials run in an executor's workers and
return plain outcomes. At most ``jobs`` trials are in flight; no new trial starts once ``max_trials``
trials have finished or ``max_time`` seconds have passed (running ones finish). The first two trials are
the baselines every search should beat: fold alone, and fold + quantize with its defaults. A recipe the
sampler proposes again is not rebuilt: the earlier outcome is told again and listed as a duplicate.

At the end, whatever happened, the search folder holds ``auto_report.json`` (every trial) and, with
matplotlib, ``pareto.png``; the output is the best model that meets the gates, or the most accurate one
with exit code 1 so a release pipeline gating on the exit code does not ship it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxopt.auto import frontier
from onnxopt.auto import study as studies
from onnxopt.auto.executors import make_executor
from onnxopt.auto.space import SearchSpace, build_space
from onnxopt.auto.trial import MODEL_FILE, TrialJob, TrialOutcome, pass_label, run_in_worker, run_trial
from onnxopt.errors import EXIT_GATE_FAILED, EXIT_PLUGIN_FAILED, UsageError
from onnxopt.gates import DEFAULT_GATES

if TYPE_CHECKING:
    from onnxopt.session import Session

REPORT_FILE = "auto_report.json"
PLOT_FILE = "pareto.png"
#: gates that judge output quality; without labels one of them must be set or nothing is checked
QUALITY_GATES = ("atol", "rtol", "min_cosine", "min_channel_cosine", "min_top1")


@dataclass
class AutoSettings:
    """One search; see :func:`onnxopt.api.auto` for the meaning of each field."""

    source: Path
    output: Path
    data: str
    objective: str = "size"
    max_drop: float = 0.01
    gates: dict[str, float] = field(default_factory=dict)
    max_trials: int = 30
    max_time: float | None = None
    jobs: int = 1
    executor: str = "process"
    workdir: Path | None = None
    seed: int = 0
    requested: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    pipeline: dict[str, Any] = field(default_factory=dict)  # recipe fields for every trial: shapes, batch_size, ...
    keep_models: bool = False
    quiet: bool = True


@dataclass
class AutoResult:
    """The outcome of a search: the shipped trial, the frontier, every trial, and where the files are."""

    output: str | None
    workdir: str
    objective: str
    gates: dict[str, float]
    best: TrialOutcome | None
    met_budget: bool
    frontier: list[TrialOutcome]
    trials: list[TrialOutcome]
    report: str
    plot: str | None
    resumed: bool = False
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_auto(settings: AutoSettings) -> AutoResult:
    """Run (or resume) the search described by ``settings``."""
    from onnxopt import model_io
    from onnxopt.session import Session

    _check(settings)
    studies.import_optuna()  # a missing extra is a one-line error before any work
    model_io.check_writable(settings.output)
    session = Session(settings.plugins)
    space = build_space(session.passes, requested=settings.requested)
    notes = list(space.notes)
    gates = _gates(settings, _has_labels(session, settings), notes)
    workdir = settings.workdir or settings.output.with_name(settings.output.stem + ".auto")
    workdir.mkdir(parents=True, exist_ok=True)
    identity = {
        "model": studies.fingerprint(str(settings.source)), "data": studies.fingerprint(settings.data),
        "objective": settings.objective, "gates": gates, "space": space.signature(), "seed": settings.seed,
        "pipeline": json.dumps(settings.pipeline, sort_keys=True, default=str),
    }  # fmt: skip
    with studies.exclusive(workdir):
        startup = min(10, max(2, settings.max_trials // 4))
        study, resumed = studies.open_study(workdir, identity, seed=settings.seed, startup_trials=startup)
        if resumed:
            requeued = studies.requeue_interrupted(study)
            for number in requeued:  # whatever the dead worker left half-written
                shutil.rmtree(_trial_folder(workdir, number), ignore_errors=True)
            again = f"; {len(requeued)} interrupted trial(s) run again" if requeued else ""
            notes.append(f"resumed the search in {workdir}{again}")
        else:
            for params in _baselines(space):
                study.enqueue_trial(params)
        _Loop(settings, space, gates, workdir, study).run()
        return _finish(settings, gates, workdir, study, space, notes, resumed)


def _check(settings: AutoSettings) -> None:
    from onnxopt.pipeline import same_file

    if settings.objective not in frontier.OBJECTIVES:
        raise UsageError(f"unknown objective {settings.objective!r} (choose from {', '.join(frontier.OBJECTIVES)})")
    if settings.max_trials < 1 or settings.jobs < 1:
        raise UsageError("--max-trials and --jobs must be at least 1")
    if settings.max_time is not None and settings.max_time <= 0:
        raise UsageError("--max-time must be a positive number of seconds")
    if settings.objective != "size" and settings.pipeline.get("latency_runs") == 0:
        raise UsageError(f"objective {settings.objective!r} needs latency: --latency-runs must be above 0")
    if not settings.source.is_file():
        raise UsageError(f"{settings.source}: no such model file")
    if same_file(settings.source, settings.output):
        raise UsageError(f"{settings.output}: output would overwrite the input")


def _has_labels(session: Session, settings: AutoSettings) -> bool:
    """Open the data once here: a bad --data / --val is one error now, not one per trial. The judging set
    (--val, else --data) decides whether the budget is an accuracy drop."""
    from onnxopt import pipeline
    from onnxopt.recipe import build_recipe

    recipe = build_recipe(data=settings.data, seed=settings.seed, **settings.pipeline)
    model = session.load(settings.source)
    calibration = pipeline.open_dataset(session, settings.data, model, recipe)
    if recipe.val is None:
        return calibration.labels is not None
    return pipeline.open_dataset(session, recipe.val, model, recipe).labels is not None


def _gates(settings: AutoSettings, labelled: bool, notes: list[str]) -> dict[str, float]:
    """The budget: the accuracy drop with labels; without, the given quality gates or the default verdict (each
    output by its task metric where one is detected, else cosine and worst-channel cosine), as optimize judges."""
    gates = dict(settings.gates)
    if labelled:
        gates.setdefault("max_accuracy_drop", settings.max_drop)
    elif not any(name in gates for name in QUALITY_GATES):
        notes.append(
            "the data has no labels: the budget is optimize's default verdict (task metrics where detected, "
            f"else cosine {DEFAULT_GATES.min_cosine} and worst-channel cosine {DEFAULT_GATES.min_channel_cosine}; "
            "set --min-cosine or --metric to change it)"
        )
    return gates


def _baselines(space: SearchSpace) -> list[dict[str, Any]]:
    """Fold alone, then every baseline a pass declares (its :attr:`~onnxopt.passes.SearchHint.baselines`), alone."""
    optional = [p for p in space.passes if not p.always]
    runs = [{p.name: False for p in optional}]
    for entry in optional:
        for overrides in entry.baselines:
            chosen = {**entry.defaults, **overrides}
            params: dict[str, Any] = {p.name: p is entry for p in optional}
            params.update({f"{entry.name}.{d.param}": chosen[d.option] for d in entry.dims})
            runs.append(params)
    return runs


class _Loop:
    """Keeps up to ``jobs`` trials in flight until the trial or time budget is spent."""

    def __init__(self, settings: AutoSettings, space: SearchSpace, gates: dict[str, float], workdir: Path, study: Any):
        self.settings, self.space, self.gates, self.workdir, self.study = settings, space, gates, workdir, study
        self.deadline = None if settings.max_time is None else time.monotonic() + settings.max_time
        self.finished = {
            self._key(o.recipe): o for o in studies.outcomes(study) if o.error is None and o.duplicate_of is None
        }
        self.count = len(studies.outcomes(study))

    @staticmethod
    def _key(recipe: list[str]) -> str:
        return json.dumps(recipe)

    def _more(self, running: int) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return False
        return self.count + running < self.settings.max_trials

    def run(self) -> None:
        from tqdm import tqdm

        optuna = studies.import_optuna()
        pending: dict[Future, Any] = {}
        bar = tqdm(total=self.settings.max_trials, initial=self.count, desc="auto", unit="trial", leave=False,
                   disable=self.settings.quiet or not sys.stderr.isatty(), file=sys.stderr)  # fmt: skip
        executor = make_executor(self.settings.executor, self.settings.jobs)
        try:
            while True:
                while len(pending) < self.settings.jobs and self._more(len(pending)):
                    self._start(executor, pending)
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = pending.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # the worker died (out of memory, a segfault in a native library)
                        outcome = TrialOutcome(trial.number, trial.user_attrs["recipe"], error=f"worker failed: {exc}",
                                               exit_code=EXIT_PLUGIN_FAILED)  # fmt: skip
                        if isinstance(exc, BrokenProcessPool):  # a dead worker breaks the whole pool: start afresh
                            executor.shutdown(wait=False, cancel_futures=True)
                            executor = make_executor(self.settings.executor, self.settings.jobs)
                    self._tell(optuna, trial, outcome)
                    bar.update(1)
        except BrokenProcessPool:
            executor.shutdown(wait=False, cancel_futures=True)
            raise UsageError(
                "a trial worker could not start; from Python, call onnxopt.api.auto under if __name__ == '__main__':"
            ) from None
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        executor.shutdown(wait=True)

    def _start(self, executor: Any, pending: dict[Future, Any]) -> None:
        trial = self.study.ask()
        steps = self.space.sample(trial)
        job = _job(self.settings, trial.number, [(s.name, s.options) for s in steps], self.gates, self.workdir)
        recipe = [pass_label(name, options) for name, options in job.passes]
        trial.set_user_attr("recipe", recipe)
        earlier = self.finished.get(self._key(recipe))
        if earlier is not None:
            copy = dataclasses.replace(earlier, number=trial.number, duplicate_of=earlier.number, seconds=0.0)
            self._tell(studies.import_optuna(), trial, copy)
            return
        pending[executor.submit(run_in_worker, job, self.settings.quiet)] = trial

    def _tell(self, optuna: Any, trial: Any, outcome: TrialOutcome) -> None:
        trial.set_user_attr(studies.OUTCOME, studies.outcome_attr(outcome))
        self.count += 1
        if outcome.error is not None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        trial.set_constraint(studies.CONSTRAINT, outcome.violation)
        if outcome.duplicate_of is None:
            self.finished.setdefault(self._key(outcome.recipe), outcome)
        self.study.tell(trial, frontier.objective_value(outcome, self.settings.objective))


def _trial_folder(workdir: Path, number: int) -> Path:
    return workdir / "trials" / f"{number:04d}"


def _job(settings: AutoSettings, number: int, passes: list[tuple[str, dict[str, Any]]], gates: dict[str, float],
         workdir: Path) -> TrialJob:  # fmt: skip
    """A trial's job: absolute paths (workers may run elsewhere), onnxruntime threads split between the jobs."""
    data = str(Path(settings.data).absolute()) if Path(settings.data).exists() else settings.data
    threads = max(1, (os.cpu_count() or 1) // settings.jobs)
    pipeline = {"threads": threads, "seed": settings.seed, **settings.pipeline}
    steps = tuple((name, dict(options)) for name, options in passes)
    folder = str(_trial_folder(workdir, number))
    return TrialJob(number, str(settings.source.absolute()), folder, steps, data, gates, pipeline, settings.plugins)


def _finish(
    settings: AutoSettings, gates: dict[str, float], workdir: Path, study: Any, space: SearchSpace,
    notes: list[str], resumed: bool,
) -> AutoResult:  # fmt: skip
    """Write the chosen model, the report and the plot; set the exit code."""
    trials = studies.outcomes(study)
    best, met = frontier.choose(trials, settings.objective)
    front = frontier.pareto(trials)
    result = AutoResult(None, str(workdir), settings.objective, gates, best, met, front, trials,
                        str(workdir / REPORT_FILE), None, resumed, notes)  # fmt: skip
    if best is None:
        failed = [o for o in trials if o.error]
        result.exit_code = failed[0].exit_code if failed else EXIT_PLUGIN_FAILED
        result.message = "no trial produced a model" + (f": {failed[0].error}" if failed else "")
    else:
        _write_best(settings, best, gates, workdir)
        result.output = str(settings.output)
        if not met:
            result.exit_code = EXIT_GATE_FAILED
            result.message = (
                f"no trial met the budget; wrote the most accurate one (trial {best.number}) to {settings.output} — "
                "do not ship it"
            )
    if not settings.keep_models:
        _remove_models(trials, {o.number for o in front} | ({best.number} if best else set()))
    if best is not None:
        result.plot = _plot(settings, trials, best, gates, workdir, notes)
    studies.atomic_write_text(workdir / REPORT_FILE, report_json(result, settings, space))
    return result


def _plot(settings: AutoSettings, trials: list[TrialOutcome], best: TrialOutcome, gates: dict[str, float],
          workdir: Path, notes: list[str]) -> str | None:  # fmt: skip
    from onnxopt.auto.plot import matplotlib_available, plot_frontier

    if not matplotlib_available():
        notes.append("matplotlib is not installed: no Pareto plot (pip install 'onnxopt[plot]')")
        return None
    title = f"onnxopt auto: {settings.source.name}, objective {settings.objective}, {len(trials)} trials"
    reference = best.accuracy_reference if best.accuracy is not None else 1.0
    path = plot_frontier(trials, best, workdir / PLOT_FILE, title=title, budget=_quality_floor(best, gates),
                         reference=reference)  # fmt: skip
    return str(path)


def _quality_floor(best: TrialOutcome, gates: dict[str, float]) -> float | None:
    if best.accuracy is not None and best.accuracy_reference is not None and "max_accuracy_drop" in gates:
        return best.accuracy_reference - gates["max_accuracy_drop"]
    return gates.get("min_cosine") if best.accuracy is None else None


def _write_best(settings: AutoSettings, best: TrialOutcome, gates: dict[str, float], workdir: Path) -> None:
    """Copy the chosen trial's model to the output (atomically); rebuild it if its file was removed."""
    from onnxopt import model_io
    from onnxopt.recipe import pass_steps

    path = Path(best.model) if best.model else None
    if path is None or not path.exists():  # removed by an earlier run of a resumed search: same recipe, same seed
        steps = pass_steps(best.recipe)
        rebuilt = run_trial(_job(settings, best.number, [(s.name, s.options) for s in steps], gates, workdir))
        path = Path(rebuilt.model or "")
    model_io.save(model_io.load(path, check=False), settings.output)


def _remove_models(trials: list[TrialOutcome], keep: set[int]) -> None:
    """Models of trials off the frontier are deleted (their reports stay): a search can run hundreds."""
    for outcome in trials:
        if outcome.number not in keep and outcome.model and outcome.duplicate_of is None:
            folder = Path(outcome.model).parent
            for file in folder.glob(MODEL_FILE + "*"):
                file.unlink(missing_ok=True)


def report_json(result: AutoResult, settings: AutoSettings, space: SearchSpace) -> str:
    """The JSON report: the settings, the choice, the frontier's trial numbers, and every trial."""
    from onnxopt.report import to_json

    data = {
        "model": str(settings.source), "data": settings.data, "output": result.output,
        "objective": result.objective, "gates": result.gates, "space": space.describe(),
        "exit_code": result.exit_code, "message": result.message, "met_budget": result.met_budget,
        "best": result.best, "frontier": [o.number for o in result.frontier], "plot": result.plot,
        "notes": result.notes, "trials": result.trials,
    }  # fmt: skip
    return to_json(data)


def render_text(result: AutoResult) -> str:
    """What ``onnxopt auto`` prints: the frontier table, the choice, and where the files went."""
    lines = [f"note: {note}" for note in result.notes]
    counted = [o for o in result.trials if o.duplicate_of is None]
    lines.append(
        f"{len(result.trials)} trials ({len(result.trials) - len(counted)} repeated a recipe, "
        f"{sum(1 for o in counted if o.error)} failed); "
        f"frontier (size, {'accuracy' if _labelled(result) else 'cosine'}, latency):"
    )
    lines.append(frontier.frontier_table(result.frontier, result.best))
    best = result.best
    if best is not None:
        gates = ", ".join(f"{k} {v:g}" for k, v in result.gates.items())
        reference = f" (original {best.accuracy_reference:.4f})" if best.accuracy is not None else ""
        latency = "-" if best.latency_ratio is None else f"{best.latency_ratio:.3f}x"
        lines.append(
            f"chosen: trial {best.number}, {frontier.passes_text(best)}: size {best.size_ratio:.4f}x, "
            f"{'accuracy' if best.accuracy is not None else 'min cosine'} {frontier.quality(best):.4f}{reference}, "
            f"latency {latency} — {'meets' if result.met_budget else 'MISSES'} the budget ({gates})"
        )
    lines.append(f"report: {result.report}" + (f"   plot: {result.plot}" if result.plot else ""))
    lines.append(("OK" if result.ok else f"FAILED (exit {result.exit_code}): {result.message}")
                 + (f" — written: {result.output}" if result.output else " — nothing written"))  # fmt: skip
    return "\n".join(lines)


def _labelled(result: AutoResult) -> bool:
    return any(o.accuracy is not None for o in result.trials)
