"""What magnitude and structured pruning buy in onnxruntime: parameters, file size (raw and zipped), latency, fidelity.

    python bench/prune_real_models.py [--models digits,transformer,det] [--rounds 30] [--no-readme]

Every variant is built by ``onnxopt.optimize`` (fold first, then prune) and measured here against the original
file: parameters (stored values), file size and its zip-deflated size, latency ratio (1 intra-op thread,
interleaved rounds, median of per-round ratios: ``onnxopt.validation.measure_latency``), and fidelity:
accuracy on the fixtures' labelled validation split; for PP-OCRv4 det (rapidocr-onnxruntime==1.4.4, fetched by
bench/common.py) on synthetic document pages (bench/calibration_data.py), the cosine of the probability
map and the IoU of its text pixels (p > 0.3, rapidocr's threshold) with the original's. Nothing is retrained:
the accuracy lost to structured pruning is what ``distill`` has to recover. The ``round_to`` rows show why the
default keeps channel counts at multiples of 8: onnxruntime runs a Conv in its blocked NCHWc layout only when
the channels are a multiple of the block (8 with AVX2, 16 with AVX-512); exact counts fall back to slower kernels.

Writes its tables into the ``prune_real_models`` section of bench/README.md unless ``--no-readme``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import calibration_data  # noqa: E402
import common  # noqa: E402
from common import zipped_size  # noqa: E402

import onnxopt  # noqa: E402
from onnxopt.summary import summarize  # noqa: E402
from onnxopt.validation import measure_latency, open_session  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fold", ("fold",)),
    ("magnitude 50 %", ("fold", "prune:sparsity=0.5")),
    ("magnitude 80 %, bitmask", ("fold", "prune:sparsity=0.8,storage=bitmask")),
    ("structured 30 %, exact (round_to=1)", ("fold", "prune-structured:sparsity=0.3,round_to=1")),
    ("structured 30 % (round_to=8)", ("fold", "prune-structured:sparsity=0.3")),
    ("structured 30 %, round_to=16", ("fold", "prune-structured:sparsity=0.3,round_to=16")),
    ("structured 30 %, activation", ("fold", "prune-structured:sparsity=0.3,criterion=activation")),
    ("structured 50 %", ("fold", "prune-structured:sparsity=0.5")),
)


@dataclass
class Subject:
    key: str
    title: str
    path: Path
    data: Path  # the npz the passes get (activation criterion) and fidelity is measured on
    labelled: bool


def _feeds(subject: Subject) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    arrays = dict(np.load(subject.data))
    labels = arrays.pop("labels", None)
    name, values = next(iter(arrays.items()))
    if subject.labelled:
        return [{name: values}], labels
    return [{name: sample} for sample in values], None


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = open_session(path, threads=2)
    return np.concatenate([session.run(None, feed)[0] for feed in feeds])


def _fidelity(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> str:
    if labels is not None:
        return f"accuracy {np.mean(candidate.argmax(-1) == labels):.4f}"
    iou = common.mask_ious([reference], [candidate])[0]
    return f"cos {common.cosine(reference, candidate):.4f}, text IoU {iou:.3f}"


def bench(subject: Subject, work: Path, rounds: int) -> list[str]:
    feeds, labels = _feeds(subject)
    reference = _outputs(subject.path, feeds)
    original = summarize(onnxopt.load(subject.path, check=False), subject.path)
    base_session = open_session(subject.path, threads=1)
    latency_feed = {k: v[:1] for k, v in feeds[0].items()}
    header = ["variant", "layers pruned", "parameters", "file size", "zipped", "latency ratio (1 thread)", "fidelity",
              "time (s)"]  # fmt: skip
    first = ["original", "–", f"{original.parameters:,}", f"{original.file_bytes / 1024:.1f} KiB",
             f"{zipped_size(subject.path) / 1024:.1f} KiB", 1, _fidelity(reference, reference, labels),
             "–"]  # fmt: skip
    rows = common.markdown_table(header, [first], "lrrrrrlr").splitlines()
    print("\n".join(rows), flush=True)
    for name, passes in VARIANTS:
        out = work / f"{subject.key}-{'_'.join(''.join(c if c.isalnum() else ' ' for c in name).split())}.onnx"
        start = time.perf_counter()
        report = onnxopt.optimize(
            subject.path, out, passes=list(passes), data=subject.data, gates={"min_cosine": 0.0}, latency_runs=1
        )
        seconds = time.perf_counter() - start
        if report.exit_code != 0:
            rows.append(common.markdown_row([name, f"failed: {report.message}"]))
            continue
        stats = report.steps[-1].stats
        pruned = stats.get("layers_pruned", len(stats.get("tensors", {})) if "prune" in passes[-1] else "–")
        summary = summarize(onnxopt.load(out, check=False), out)
        ratio = measure_latency(base_session, open_session(out, threads=1), latency_feed, runs=rounds)[2]
        fidelity = _fidelity(reference, _outputs(out, feeds), labels)
        sizes = [summary.parameters / original.parameters, summary.file_bytes / original.file_bytes,
                 zipped_size(out) / zipped_size(subject.path)]  # fmt: skip
        rows.append(common.markdown_row([name, pruned, *(f"{r:.3f}x" for r in sizes), f"{ratio:.3f}", fidelity,
                                         f"{seconds:.1f}"]))  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def subjects(keys: set[str], work: Path) -> list[Subject]:
    found = []
    if "digits" in keys:
        found.append(
            Subject(
                "digits",
                "digits CNN fixture (400 labelled validation images)",
                FIXTURES / "digits_cnn.onnx",
                FIXTURES / "digits_cnn_val.npz",
                True,
            )
        )
    if "transformer" in keys:
        found.append(
            Subject(
                "transformer",
                "tiny transformer fixture (400 labelled sequences)",
                FIXTURES / "tiny_transformer.onnx",
                FIXTURES / "tiny_transformer_val.npz",
                True,
            )
        )
    if "det" in keys:
        model = common.model("det")
        pages = work / "det_pages.npz"
        if not pages.exists():
            np.savez(pages, x=calibration_data.det_set(4, base=1000))
        title = model.title + ", 4 synthetic 640x640 document pages"
        found.append(Subject("det", title, common.fetch(model), pages, False))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,transformer,det")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved latency rounds per variant")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    work = common.cache_dir() / "prune-bench"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sections = []
    for subject in subjects(set(args.models.split(",")), work):
        print(f"\n### {subject.title}\n", flush=True)
        rows = bench(subject, work, args.rounds)
        sections.append(f"### {subject.title}\n\n" + "\n".join(rows) + "\n")
    command = common.command_line("prune_real_models.py", sys.argv[1:] if argv is None else argv)
    if not args.no_readme:
        minutes = (time.perf_counter() - started) / 60
        lines = [__doc__.split("\n\n", 2)[2].split("\n\nWrites")[0], "",
                 f"Last run: {dt.date.today()}, `{command}`, {minutes:.1f} min. Ratios are against the original file; "
                 "latency ratio < 1 is faster.", "", "\n".join(sections).rstrip("\n")]  # fmt: skip
        title = "prune_real_models.py: magnitude and structured pruning in onnxruntime"
        common.write_readme_section("prune_real_models", title, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
