"""Distillation proof: smaller students retrained on a teacher's outputs, against the issue's targets.

    python bench/distill.py [--epochs 150] [--no-readme]

Cases (torch backend, onnxopt's Python API, one process, seed 0):

- digits CNN -> a student with <= 1/4 of the teacher's parameters, within 2 points. Two students: a torch
  module a user would write (bench/distill_students.py, depthwise-separable, 448 parameters) named by
  ``file.py:function``, and the teacher narrowed to width 0.35 by structured prune (conv 8 -> 3 and
  16 -> 6 channels, 450 parameters). The separable student trained on the labels only (alpha = 0) is the
  baseline that shows what the teacher's outputs add.
- iris MLP, hidden 10 -> 5 (width 0.5), distilled. Target: within 3 points.
- digits CNN structured-pruned 50 % (``prune-structured:sparsity=0.5,round_to=1``): accuracy of the pruned
  model as pruned, then after distillation with the pruned file as the student. Target: most of the loss
  recovered (recovered = (after - before) / (teacher - before) > 0.5).

Data: the fixtures' own splits (fixtures/build_fixtures.py ``load_splits``: sklearn's digits and iris, seed 0).
Students train on the train split (digits 1297, iris 90 rows); early stopping looks at 10 % of it held out,
never at the evaluation rows. Accuracy is measured in onnxruntime on rows no training step saw: the digits
validation split (400, the fixture README's 0.9825) and iris calibration + validation (60).
Parameters are ``onnxopt.summary.count_parameters`` of the ONNX files (BatchNorm statistics included on both sides).

Prints the table with the command that made it and (unless ``--no-readme``) writes it into the ``distill``
section of bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxopt
from onnxopt.report import table
from onnxopt.summary import count_parameters
from onnxopt_plugins.distill import distill

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
sys.path.insert(0, str(HERE))
import common  # noqa: E402
from build_fixtures import load_splits  # noqa: E402


def accuracy(model: Path, x: np.ndarray, y: np.ndarray) -> float:
    scores = ort.InferenceSession(str(model)).run(None, {"input": x})[0]
    return float((scores.argmax(1) == y).mean())


def parameters(model: Path) -> int:
    return count_parameters(onnxopt.load(model, check=False))


class Bench:
    def __init__(self, work: Path, epochs: int) -> None:
        self.work = work
        self.epochs = epochs
        iris, digits = load_splits()
        digits = digits.reshaped(1, 8, 8)
        self.data = {
            "digits": (self._train("digits", digits.train), digits.val.x, digits.val.y),
            "iris": (
                self._train("iris", iris.train),
                np.concatenate([iris.calib.x, iris.val.x]),
                np.concatenate([iris.calib.y, iris.val.y]),
            ),
        }
        self.rows: list[list[str]] = []

    def _train(self, name: str, split) -> Path:  # noqa: ANN001 - build_fixtures.Split
        path = self.work / f"{name}_train.npz"
        np.savez(path, input=split.x, labels=split.y)
        return path

    def distill(self, name: str, teacher: Path, out: Path, **options) -> tuple[dict, float]:
        train = self.data[name][0]
        start = time.perf_counter()
        report = distill(teacher, out, data=train, epochs=self.epochs, lr=0.01, patience=0, **options)
        if report.exit_code:
            raise SystemExit(f"{out.name}: {report.message}")
        return report.steps[0].stats, time.perf_counter() - start

    def row(self, case: str, name: str, teacher: Path, student: Path, before: float | None, stats: dict, seconds: float,
            target: str, met: bool | None) -> None:  # fmt: skip
        _, x, y = self.data[name]
        t_params, s_params = parameters(teacher), parameters(student)
        t_acc, s_acc = accuracy(teacher, x, y), accuracy(student, x, y)
        self.rows.append([
            case, f"{t_params} -> {s_params} ({s_params / t_params:.2f}x)", f"{t_acc:.4f}",
            "-" if before is None else f"{before:.4f}", f"{s_acc:.4f}", f"{100 * (s_acc - t_acc):+.2f}",
            target, "-" if met is None else "yes" if met else "NO", f"{stats['epochs']} ({stats['best_epoch']})",
            f"{seconds:.0f}",
        ])  # fmt: skip
        print(" | ".join(self.rows[-1]), flush=True)

    def run(self) -> None:
        digits, iris = FIXTURES / "digits_cnn.onnx", FIXTURES / "iris_mlp.onnx"
        _, dx, dy = self.data["digits"]
        teacher_digits = accuracy(digits, dx, dy)

        quarter = "<= 1/4 params, within 2 points"
        separable = f"{HERE / 'distill_students.py'}:digits_separable"
        for case, options in (("digits CNN -> separable student (torch module), distilled", {"student": separable}),
                              ("  same student, labels only (alpha=0)", {"student": separable, "alpha": 0.0}),
                              ("digits CNN -> width 0.35 (structured prune), distilled", {"width": 0.35})):  # fmt: skip
            out = self.work / f"digits_{len(self.rows)}.onnx"
            stats, seconds = self.distill("digits", digits, out, **options)
            small = parameters(out) <= parameters(digits) / 4
            gap = 100 * (teacher_digits - accuracy(out, dx, dy))
            baseline = options.get("alpha") == 0.0
            self.row(case, "digits", digits, out, None, stats, seconds, "baseline" if baseline else quarter,
                     None if baseline else small and gap <= 2.0)  # fmt: skip

        out = self.work / "iris_w05.onnx"
        _, ix, iy = self.data["iris"]
        stats, seconds = self.distill("iris", iris, out, width=0.5, batch_size=16)
        gap = 100 * (accuracy(iris, ix, iy) - accuracy(out, ix, iy))
        self.row(
            "iris MLP hidden 10 -> 5, distilled", "iris", iris, out, None, stats, seconds, "within 3 points", gap <= 3.0
        )

        pruned = self.work / "digits_pruned50.onnx"
        made = onnxopt.optimize(digits, pruned, passes=[("prune-structured", {"sparsity": 0.5, "round_to": 1})],
                                gates={"min_cosine": 0.0, "min_channel_cosine": -1.0}, latency_runs=0)  # fmt: skip
        if made.exit_code:
            raise SystemExit(f"prune: {made.message}")
        before = accuracy(pruned, dx, dy)
        out = self.work / "digits_pruned50_distilled.onnx"
        stats, seconds = self.distill("digits", digits, out, student=pruned)
        after = accuracy(out, dx, dy)
        recovered = (after - before) / (teacher_digits - before) if teacher_digits > before else 1.0
        self.row(f"digits CNN pruned 50 % -> distilled (recovered {recovered:.0%})", "digits", digits, out, before,
                 stats, seconds, "recover most of the loss", recovered > 0.5)  # fmt: skip


HEADERS = ["case", "params teacher -> student", "teacher acc", "before", "student acc", "vs teacher (points)", "target",
           "met", "epochs (best)", "seconds"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=150, help="epochs per student (no early stop; the best held-out epoch is kept)"
    )
    parser.add_argument("--no-readme", action="store_true", help="print the table only; leave bench/README.md alone")
    args = parser.parse_args()
    command = common.command_line("distill.py", sys.argv[1:])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as work:
        os.environ["ONNXOPT_CACHE_DIR"] = str(Path(work) / "cache")
        bench = Bench(Path(work), args.epochs)
        bench.run()
    import torch

    text = table(HEADERS, bench.rows)
    elapsed = time.perf_counter() - start
    footer = (f"`{command}` — {datetime.date.today()}, {elapsed:.0f} s, torch {torch.__version__}, onnxruntime "
              f"{ort.__version__}, {common.cpu()}; accuracy in onnxruntime on rows no "
              f"training step saw (digits val 400, iris calib + val 60); "
              f"'before' is the pruned model as pruned.")  # fmt: skip
    print("\n" + text + "\n\n" + footer)
    if not args.no_readme:
        common.write_readme_section("distill", "distill", [footer, "", "```", text, "```"])


if __name__ == "__main__":
    main()
