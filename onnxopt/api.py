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
from onnxopt.gates import Gates
from onnxopt.recipe import PassArg, Recipe, as_gates, build_recipe, normal_shapes, pass_steps
from onnxopt.report import Report
from onnxopt.summary import ModelSummary
from onnxopt.validation import ValidationResult


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
    retrained: bool = False,
) -> ValidationResult:
    """Compare two model files in onnxruntime on ``data`` against ``gates`` and task ``metrics``.

    Without ``data`` the inputs are synthetic, at shapes derived until the reference runs (the result's
    ``data_description`` says which); if none run, ``compared`` is False. ``defaults`` applies the default
    verdict (detected task metrics, else cosine) where no gate is given; ``retrained`` says the candidate is a
    retrained model (a distilled student), judged by agreement instead (:data:`onnxopt.gates.RETRAINED`).
    """
    from onnxopt import model_io, pipeline
    from onnxopt.errors import DataError
    from onnxopt.gates import RETRAINED, SAME_MODEL
    from onnxopt.metrics import parse_request
    from onnxopt.session import Session
    from onnxopt.validation import compare, is_large, open_reference

    recipe = build_recipe(
        data=data, shapes=shapes, seed=seed, batch_size=batch_size, threads=threads, latency_runs=latency_runs
    )
    requests = [parse_request(text) for text in metrics]
    session = Session(plugins, quiet=quiet)
    model = model_io.load(reference, check=False)
    model_io.read_proto(candidate)  # a missing or broken candidate file is bad input, not a failed gate
    dataset = pipeline.open_dataset(session, recipe.data, model, recipe) if recipe.data is not None else None
    # without data, synthetic inputs are tried on a live session; a large reference is opened once, on them
    probe = None if dataset is not None or is_large(reference) else open_reference(reference, None, threads=threads)
    not_compared = None
    if dataset is None:
        try:
            dataset = pipeline.judge_inputs(model, probe, recipe)
        except DataError as exc:
            not_compared = str(exc)
    opened = probe or open_reference(reference, dataset, threads=threads, latency_runs=latency_runs)
    with session.context(reference_path=Path(reference), dataset=dataset, seed=seed) as context:
        result = compare(
            reference, candidate, dataset, as_gates(gates), metrics=requests,
            defaults=(RETRAINED if retrained else SAME_MODEL) if defaults else None,
            latency_runs=latency_runs, threads=threads, context=context, opened=opened,
        )  # fmt: skip
    if not_compared:
        result.notes.append(f"not validated: {not_compared}")
    return result


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
    from onnxopt.session import Session

    session = Session(plugins)
    steps = [session.passes.configure(step.name, step.options) for step in pass_steps(passes)]
    for step in steps:
        if step.spec.requires_data(step.options):
            raise UsageError(f"pass {step.spec.name!r} needs data: use onnxopt.optimize(..., data=...)")
    with session.context(shapes=normal_shapes(shapes), seed=seed) as context:
        for step in steps:
            context.stats = {}
            model = session.run_pass(step.spec, step.options, model, context).model
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
    requested: Sequence[str] = (),
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
    arguments resumes. ``requested`` names passes searched only on request (their SearchHint says ``on_request``,
    e.g. ``"distill"``, which trains). ``settings`` are recipe fields every trial uses (``shapes``, ``batch_size``,
    ``latency_runs``). Returns an :class:`onnxopt.auto.search.AutoResult`; its ``exit_code`` is 1 when no
    trial met the budget (the most accurate one was written).
    """
    from onnxopt.auto.search import AutoSettings, run_auto

    pipeline = {k: v for k, v in settings.items() if v is not None}
    if "val" in pipeline and Path(pipeline["val"]).exists():  # trials run in other folders and processes
        pipeline["val"] = str(Path(pipeline["val"]).absolute())
    build_recipe(**pipeline)  # unknown or malformed settings fail here, before the search starts
    if "shapes" in pipeline:
        pipeline["shapes"] = normal_shapes(pipeline["shapes"])
    return run_auto(
        AutoSettings(
            Path(source),
            Path(output),
            str(data),
            objective,
            float(max_drop),
            dict(_gates_mapping(gates)),
            int(max_trials),
            max_time,
            int(jobs),
            executor,
            Path(workdir) if workdir is not None else None,
            int(seed),
            tuple(requested),
            tuple(plugins),
            pipeline,
            keep_models,
            quiet,
        )  # fmt: skip
    )


def _gates_mapping(gates: Gates | Mapping[str, Any] | None) -> dict[str, float]:
    checked = as_gates(gates) or Gates()
    return {k: v for k, v in dataclasses.asdict(checked).items() if v is not None}
