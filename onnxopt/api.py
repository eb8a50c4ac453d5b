"""The Python API a deployment script calls; the CLI is a thin layer over these functions.

No pluggy, no subprocess: ``onnxopt.optimize(...)`` returns the report, ``onnxopt.validate(...)`` the
validation result, and every user mistake raises an :class:`onnxopt.errors.OnnxoptError` whose
``exit_code`` is what the CLI would exit with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxopt.errors import UsageError
from onnxopt.recipe import PassArg, Recipe, load_recipe, pass_steps
from onnxopt.report import Report
from onnxopt.summary import ModelSummary
from onnxopt.gates import Gates
from onnxopt.validation import ValidationResult


def _gates(gates: Gates | Mapping[str, Any] | None) -> Gates | None:
    if gates is None or isinstance(gates, Gates):
        return gates
    return Gates.from_mapping(dict(gates))


def build_recipe(
    recipe: Recipe | str | Path | None = None,
    *,
    passes: Sequence[PassArg] = (),
    data: str | Path | None = None,
    gates: Gates | Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    **settings: Any,
) -> Recipe:
    """A recipe file or object, with explicit arguments taking precedence (passes are appended)."""
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    recipe = dataclasses.replace(recipe) if recipe is not None else Recipe()
    recipe.passes = [*recipe.passes, *pass_steps(passes)]
    if data is not None:
        recipe.data = str(data)
    if settings.get("val") is not None:
        settings["val"] = str(settings["val"])
    if (extra := _gates(gates)) is not None:
        recipe.gates = recipe.gates.merged(extra)
    if shapes:
        recipe.shapes = {**recipe.shapes, **{k: tuple(int(d) for d in v) for k, v in shapes.items()}}
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}")
    return dataclasses.replace(recipe, **{k: v for k, v in settings.items() if v is not None})


def optimize(
    source: str | Path,
    output: str | Path | None,
    *,
    passes: Sequence[PassArg] = (),
    recipe: Recipe | str | Path | None = None,
    data: str | Path | None = None,
    gates: Gates | Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    plugins: Sequence[str] = (),
    in_place: bool = False,
    quiet: bool = True,
    **settings: Any,
) -> Report:
    """Optimize ``source`` into ``output``, e.g. ``optimize("in.onnx", "out.onnx", passes=["fold"])``.

    ``settings`` are further recipe fields (``on_failure="stop"``, ``seed=1``, ...). The returned
    report's ``exit_code`` is 0, 1 (a gate failed) or 3 (a plugin failed); bad input raises.
    """
    from onnxopt.pipeline import optimize as run

    full = build_recipe(recipe, passes=passes, data=data, gates=gates, shapes=shapes, **settings)
    return run(source, output, full, plugins=plugins, quiet=quiet, in_place=in_place)


def validate(
    reference: str | Path,
    candidate: str | Path,
    *,
    data: str | Path | None = None,
    gates: Gates | Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    latency_runs: int = 20,
    threads: int = 0,
    seed: int = 0,
    batch_size: int | None = None,
    plugins: Sequence[str] = (),
    quiet: bool = True,
    metrics: Sequence[str] = (),
    defaults: bool = True,
) -> ValidationResult:
    """Compare two model files in onnxruntime on ``data`` against ``gates`` and task ``metrics``.

    Without ``data`` the inputs are synthetic, at shapes derived until the reference runs (the result's
    ``data_description`` says which); if none run, ``compared`` is False. ``defaults`` applies the default
    verdict (detected task metrics, else cosine) where no gate is given.
    """
    import tempfile

    from onnxopt import model_io, pipeline
    from onnxopt.context import RunContext
    from onnxopt.errors import DataError
    from onnxopt.metrics import parse_request
    from onnxopt.passes import PassRegistry
    from onnxopt.plugins import get_plugin_manager
    from onnxopt.validation import compare, is_large, open_reference

    recipe = build_recipe(data=data, shapes=shapes, seed=seed, batch_size=batch_size, threads=threads, latency_runs=latency_runs)
    requests = [parse_request(text) for text in metrics]
    pm = get_plugin_manager(plugins)
    model = model_io.load(reference, check=False)
    model_io.read_proto(candidate)  # a missing or broken candidate file is bad input, not a failed gate
    dataset = pipeline.open_dataset(pm, recipe.data, model, recipe) if recipe.data is not None else None
    # without data, synthetic inputs are tried on a live session; a large reference is opened once, on them
    probe = None if dataset is not None or is_large(reference) else open_reference(reference, None, threads=threads)
    not_compared = None
    if dataset is None:
        try:
            dataset = pipeline.judge_inputs(model, probe, recipe)
        except DataError as exc:
            not_compared = str(exc)
    opened = probe or open_reference(reference, dataset, threads=threads, latency_runs=latency_runs)
    with tempfile.TemporaryDirectory(prefix="onnxopt-") as workdir:
        context = RunContext(
            pm, PassRegistry.from_plugins(pm), Path(workdir), reference_path=Path(reference), dataset=dataset,
            seed=seed, quiet=quiet,
        )  # fmt: skip
        result = compare(
            reference, candidate, dataset, _gates(gates), metrics=requests, defaults=defaults,
            latency_runs=latency_runs, threads=threads, context=context, opened=opened,
        )  # fmt: skip
    if not_compared:
        result.notes.append(f"not validated: {not_compared}")
    return result


def distill(
    teacher: str | Path,
    output: str | Path | None,
    *,
    data: str | Path,
    student: str | Path = "",
    width: float = 1.0,
    val: str | Path | None = None,
    export_logits: bool = False,
    gates: Gates | Mapping[str, Any] | None = None,
    seed: int = 0,
    plugins: Sequence[str] = (),
    quiet: bool = True,
    **options: Any,
) -> Report:
    """Retrain a student on ``teacher``'s outputs over ``data`` and write it (as ONNX) to ``output``.

    ``student`` is a student ``.onnx``, ``module:function`` building a torch / keras model, or ``""`` for
    the teacher itself; ``width < 1`` narrows it with structured pruning. ``options`` are the distill
    pass's other options (``epochs=30``, ``alpha=0.7``, ``backend="torch"``, ... see ``onnxopt passes``).
    ``export_logits=True`` only computes and caches the teacher's outputs (``output`` may be None; the step's
    stats name the file). No gate applies unless given: a student is a different model, so gate it on
    ``min_top1`` / ``max_accuracy_drop``, not on cosine. Needs the distill plugin (built in).
    """
    import tempfile

    from onnxopt import model_io
    from onnxopt.pipeline import optimize as run, same_file
    from onnxopt.report import KEPT

    step = ("distill", {"student": str(student), "width": width, "val": "" if val is None else str(val),
                        "export_logits": export_logits, **options})  # fmt: skip
    recipe = build_recipe(passes=[step], data=data, seed=seed, validate_each_pass=False, default_gates=False)
    recipe.gates = _gates(gates) or Gates()
    if export_logits or output is None:
        return run(teacher, None, recipe, plugins=plugins, quiet=quiet)
    if same_file(teacher, output):
        raise UsageError(f"{output}: the student would overwrite the teacher")
    model_io.check_writable(output)
    # staged, so a failed distillation never leaves the teacher where the student was asked for
    with tempfile.TemporaryDirectory(prefix="onnxopt-distill-") as staging:
        staged = Path(staging) / Path(output).name
        report = run(teacher, staged, recipe, plugins=plugins, quiet=quiet)
        report.output = None
        if report.steps and report.steps[0].status == KEPT:
            model_io.save(model_io.load(staged, check=False), output)
            report.output = str(output)
    return report


def inspect(path: str | Path, *, tensors: bool = True) -> ModelSummary:
    """Op histogram, counts, sizes, and per-initializer sparsity / unique values of a model file."""
    from onnxopt import model_io
    from onnxopt.summary import summarize

    return summarize(model_io.load(path, check=False), path, tensors=tensors)


def apply_passes(
    model: Any,
    passes: Sequence[PassArg],
    *,
    plugins: Sequence[str] = (),
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> Any:
    """Run passes on an in-memory ``onnx_ir.Model`` and return the result, without validation or files.

    For tools and tests that validate in their own way; passes that need data are refused.
    ``optimize`` is the safe path for a model that will be shipped.
    """
    import tempfile

    from onnxopt.context import RunContext
    from onnxopt.passes import PassRegistry
    from onnxopt.plugins import get_plugin_manager

    pm = get_plugin_manager(plugins)
    registry = PassRegistry.from_plugins(pm)
    steps = [registry.configure(step.name, step.options) for step in pass_steps(passes)]
    for step in steps:
        if step.spec.requires_data(step.options):
            raise UsageError(f"pass {step.spec.name!r} needs data: use onnxopt.optimize(..., data=...)")
    with tempfile.TemporaryDirectory(prefix="onnxopt-") as workdir:
        fixed = {name: tuple(int(d) for d in dims) for name, dims in (shapes or {}).items()}
        context = RunContext(pm, registry, Path(workdir), shapes=fixed, seed=seed)
        for step in steps:
            context.stats = {}
            model = pm.hook.onnxopt_run_pass(spec=step.spec, options=step.options, model=model, context=context).model
    return model


def auto(
    source: str | Path,
    output: str | Path,
    *,
    data: str | Path,
    max_drop: float = 0.01,
    objective: str = "size",
    gates: Mapping[str, Any] | None = None,
    max_trials: int = 30,
    max_time: float | None = None,
    jobs: int = 1,
    executor: str = "process",
    workdir: str | Path | None = None,
    seed: int = 0,
    distill: bool = False,
    keep_models: bool = False,
    plugins: Sequence[str] = (),
    quiet: bool = True,
    **settings: Any,
) -> Any:
    """Search pass combinations for the smallest / fastest model within an accuracy budget.

    Every candidate is an ordinary :func:`optimize` run in a worker (``jobs`` at once, ``executor``
    ``"process"`` or ``"ray"``), judged against ``max_drop`` (labelled data) or ``gates`` (e.g.
    ``{"min_cosine": 0.995}``; without labels, optimize's default verdict). ``objective`` is ``"size"``,
    ``"latency"`` or ``"balanced"``. The study, every trial's report, ``auto_report.json`` and ``pareto.png``
    go to ``workdir`` (default ``<output stem>.auto`` beside ``output``); running again with the same
    arguments resumes. ``settings`` are recipe fields every trial uses (``shapes``, ``batch_size``,
    ``latency_runs``). Returns an :class:`onnxopt.auto.search.AutoResult`; its ``exit_code`` is 1 when no
    trial met the budget (the most accurate one was written).
    """
    from onnxopt.auto.search import AutoSettings, run_auto

    pipeline = {k: v for k, v in settings.items() if v is not None}
    if "val" in pipeline and Path(pipeline["val"]).exists():  # trials run in other folders and processes
        pipeline["val"] = str(Path(pipeline["val"]).absolute())
    build_recipe(**pipeline)  # unknown or malformed settings fail here, before the search starts
    if "shapes" in pipeline:
        pipeline["shapes"] = {k: tuple(int(d) for d in v) for k, v in pipeline["shapes"].items()}
    return run_auto(
        AutoSettings(
            Path(source), Path(output), str(data), objective, float(max_drop), dict(_gates_mapping(gates)),
            int(max_trials), max_time, int(jobs), executor, Path(workdir) if workdir is not None else None, int(seed),
            ("distill",) if distill else (), tuple(plugins), pipeline, keep_models, quiet,
        )  # fmt: skip
    )


def _gates_mapping(gates: Gates | Mapping[str, Any] | None) -> dict[str, float]:
    checked = _gates(gates) or Gates()
    return {k: v for k, v in dataclasses.asdict(checked).items() if v is not None}
