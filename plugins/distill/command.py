"""``onnxopt distill`` and its Python twin :func:`distill`: the distill pass run with the input as the teacher.

Both come from this plugin (the ``onnxopt_register_commands`` hook), not from the host: with the plugin blocked
(``-p no:distill``) the command is gone. The run is the ordinary pipeline (``onnxopt.optimize``) with one step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxopt import UsageError

if TYPE_CHECKING:
    from onnxopt import Report

#: Options of the pass that the command takes as flags of the same name ("see 'onnxopt passes'").
_PASS_FLAGS = (("epochs", int), ("batch-size", int), ("lr", float), ("alpha", float), ("temperature", float),
               ("patience", int), ("threads", int), ("backend", str), ("cache-dir", str), ("max-time", float),
               ("device", str), ("depth", float), ("layers", str), ("checkpoint", str),
               ("layer-weight", float))  # fmt: skip


def distill(
    teacher: str | Path,
    output: str | Path | None,
    *,
    data: str | Path,
    student: str | Path = "",
    width: float = 1.0,
    val: str | Path | None = None,
    test: str | Path | None = None,
    export_logits: bool = False,
    gates: Any = None,
    metrics: tuple[str, ...] | list[str] = (),
    seed: int = 0,
    plugins: tuple[str, ...] | list[str] = (),
    quiet: bool = True,
    **options: Any,
) -> Report:
    """Retrain a student on ``teacher``'s outputs over ``data`` and write it (as ONNX) to ``output``.

    ``student`` is a student ``.onnx``, ``module:function`` building a torch / keras model, or ``""`` for
    the teacher itself; ``width < 1`` narrows it with structured pruning. ``options`` are the distill
    pass's other options (``epochs=30``, ``alpha=0.7``, ``backend="torch"``, ... see ``onnxopt passes``).
    ``export_logits=True`` only computes and caches the teacher's outputs (``output`` may be None; the step's
    stats name the file). The student is judged against the teacher by the retrained default verdict
    (:data:`onnxopt.gates.RETRAINED`: task metrics, top-1 agreement, a cosine floor) where ``gates`` and task
    ``metrics`` (``["probs=ctc>=0.95"]``) say nothing, on ``test`` when given, else on ``val`` (the rows that also
    chose the best epoch, which flatters the student a little: the report says so), else on a tenth of ``data``.
    """
    from onnxopt import KEPT, check_writable, load, optimize, save  # onnx and onnxruntime load only on use

    step = ("distill", {"student": str(student), "width": width, "val": "" if val is None else str(val),
                        "export_logits": export_logits, **options})  # fmt: skip
    # the verdict is judged on --test, else on --val; without either the run holds a tenth of --data out of
    # training for it (pipeline.Run._hold_out): judged on --data, the student would be scored on the rows it was
    # trained on
    judged_on = test if test is not None else val
    run = {"passes": [step], "data": data, "val": None if judged_on is None else str(judged_on), "gates": gates,
           "seed": seed, "metrics": list(metrics), "plugins": plugins, "quiet": quiet,
           "validate_each_pass": False}  # fmt: skip
    if export_logits or output is None:
        return optimize(teacher, None, **run)
    if _same_file(teacher, output):
        raise UsageError(f"{output}: the student would overwrite the teacher")
    check_writable(output)
    selected_on_verdict_rows = val is not None and (test is None or _same_file(test, val))
    # staged, so a failed distillation never leaves the teacher where the student was asked for
    with tempfile.TemporaryDirectory(prefix="onnxopt-distill-") as staging:
        staged = Path(staging) / Path(output).name
        report = optimize(teacher, staged, **run)
        report.output = None
        if report.steps and report.steps[0].status == KEPT:
            save(load(staged, check=False), output)
            report.output = str(output)
    if selected_on_verdict_rows and report.final is not None and report.final.compared:
        report.notes.append(f"judged on {Path(val).name}, the rows that also chose the best epoch: a little "
                            "optimistic; --test gives rows nothing in training read")  # fmt: skip
    return report


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).absolute() == Path(b).absolute()


def add_command(add_command: Any) -> None:
    """Register ``onnxopt distill`` (see the ``onnxopt_register_commands`` hook)."""
    dst = add_command("distill", help="retrain a smaller student on a teacher model's outputs (torch / keras)",
                      handler=run_command, gates=True)  # fmt: skip
    dst.add_argument("teacher", help="teacher model (.onnx, or any format a loader plugin reads)")
    dst.add_argument("-o", "--output", help="where to write the trained student (.onnx)")
    dst.add_argument("--data", required=True, help="training data: file.npz or a folder (inputs + optional labels)")
    dst.add_argument(
        "--val",
        help="held-out .npz for early stopping, the report and (without --test) the verdict (default: 10%% of "
        "--data held out for the verdict, and 10%% of the rest for early stopping; training reads neither)",
    )
    dst.add_argument(
        "--test",
        help="held-out .npz the verdict is judged on, read by nothing in training (default: --val, which also "
        "picks the best epoch)",
    )
    dst.add_argument(
        "--student", default="", help="student .onnx, or module:function / file.py:function (torch or keras)"
    )
    dst.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="narrow the ONNX student (default: the teacher) to this fraction with structured prune",
    )
    dst.add_argument(
        "--no-reconstruct",
        dest="reconstruct",
        action="store_false",
        default=None,
        help="with --width: train the narrowed student as cut, without re-fitting its layers to the teacher's first",
    )
    dst.add_argument("--export-logits", action="store_true", help="only compute and cache the teacher's outputs")
    for name, kind in _PASS_FLAGS:
        dst.add_argument(f"--{name}", type=kind, help="see 'onnxopt passes' (distill)")
    dst.add_argument(
        "--match-layers",
        action="store_true",
        default=None,
        help="with --depth: also train each kept layer's output towards the teacher's hidden state there",
    )
    dst.add_argument(
        "--loss",
        choices=["auto", "kl", "ctc", "bce", "embedding", "mse"],
        help="default auto: from the output's shape and range",
    )
    dst.add_argument(
        "--batch-norm",
        choices=["frozen", "train"],
        help="an ONNX student's BatchNormalization while it trains: train (default) normalizes by each batch, "
        "frozen keeps the running statistics it starts from",
    )
    dst.add_argument("--output-name", help="the teacher output to distill on (default: the first)")
    dst.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and shuffling")


def run_command(args: argparse.Namespace) -> int:
    from onnxopt import emit_report

    if args.output is None and not args.export_logits:
        raise UsageError("distill needs -o STUDENT.onnx (or --export-logits to only compute the teacher's outputs)")
    names = [name.replace("-", "_") for name, _ in _PASS_FLAGS] + ["loss", "match_layers", "reconstruct", "batch_norm"]
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.output_name:
        options["target"] = args.output_name  # not "output": distill's output is the student's path
    report = distill(
        args.teacher, args.output, data=args.data, student=args.student, width=args.width, val=args.val,
        test=args.test, export_logits=args.export_logits, gates=args.gates, metrics=args.metric, seed=args.seed,
        plugins=args.plugins, quiet=args.quiet,
        **options,
    )  # fmt: skip
    return emit_report(report, args)
