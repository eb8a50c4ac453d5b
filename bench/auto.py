"""onnxopt auto against quantize-only on the same data and budget: the digits CNN (labels) and MiniLM (no labels).

    python bench/auto.py [--models digits,minilm] [--minilm PATH] [--trials 40] [--minilm-trials 12] [--jobs 2]
        [--max-time 1800] [--resume] [--no-readme]

digits: fixtures/digits_cnn.onnx on fixtures/digits_cnn_val.npz (400 labelled samples), budget
``max_accuracy_drop 0.01``. MiniLM (``--minilm PATH``, the all-MiniLM-L6-v2 export): real token ids of the
48 sentences in bench/calibration_data.py (the model's own tokenizer.json, as bench/quantize_real_models.py
gets it), no labels, budget ``min_cosine 0.98`` on both outputs (whole-output cosine, padding tokens
included; plain dynamic int8 gives 0.99 per sentence on average, so a 0.99 gate leaves little to search);
8 sentences per onnxruntime run, 10 latency rounds (MiniLM trials are minutes each on 2 cores).

Rows: the baselines through ``onnxopt.optimize`` with the same data and gates (fold + quantize with its
defaults — the "quantize-only" a user would try first — and the other quantize modes), then the model
``onnxopt.api.auto`` chose (a baseline whose quantize step missed the budget was rolled back by the pipeline: its
row shows the passes kept and "no"). Every figure comes from the pipeline's own final validation of the written
file: size on disk as a ratio to the original, accuracy (or the worst output cosine), and latency as the
median ratio of rounds interleaved with the original in the same process (20, MiniLM 10; each row's own
run; on this shared 2-core machine about +-5 % is noise, more while trials run in parallel). Search folders stay in
``$ONNXOPT_CACHE/auto-bench/`` (study, trial reports, auto_report.json, pareto.png).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import onnxopt
from onnxopt.api import auto
from onnxopt.auto.frontier import frontier_table
from onnxopt.gates import Gates
from onnxopt.recipe import Recipe
from onnxopt.report import human_bytes, table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_data  # noqa: E402
import common  # noqa: E402


def baseline_row(name: str, source: Path, out: Path, passes: list[str], data: Path, gates: dict[str, float],
                 settings: dict[str, int]) -> list:  # fmt: skip
    report = onnxopt.optimize(source, out, passes=passes, data=data, recipe=Recipe(gates=Gates(**gates)), **settings)
    final = report.final
    quality = final.accuracy_candidate if final.accuracy_candidate is not None else final.worst_cosine
    kept = " + ".join(s.name for s in report.steps if s.status == "kept")
    return [name, kept, human_bytes(final.size_candidate), round(final.size_ratio, 4), round(quality, 4),
            round(final.latency_ratio, 3), "yes" if report.ok else "no"]  # fmt: skip


def bench(key: str, source: Path, data: Path, gates: dict[str, float], baselines: dict[str, list[str]],
          work: Path, args: argparse.Namespace, trials: int, settings: dict[str, int]) -> str:  # fmt: skip
    folder = work / key
    if not args.resume:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [baseline_row(name, source, folder / f"{name}.onnx", passes, data, gates, settings)
            for name, passes in baselines.items()]  # fmt: skip
    start = time.perf_counter()
    result = auto(source, folder / "auto.onnx", data=data, gates=gates, max_trials=trials, jobs=args.jobs,
                  max_time=args.max_time, seed=args.seed, **settings)  # fmt: skip
    elapsed = time.perf_counter() - start
    best = result.best
    quality = best.accuracy if best.accuracy is not None else best.cosine
    rows.append(["auto (chosen)", " + ".join(best.kept), human_bytes(best.size_bytes), round(best.size_ratio, 4),
                 round(quality, 4), round(best.latency_ratio, 3), "yes" if result.met_budget else "no"])  # fmt: skip
    header = ["row", "passes kept", "size", "size x", "accuracy" if best.accuracy is not None else "min cosine",
              "latency x", "meets budget"]  # fmt: skip
    counted = [o for o in result.trials if o.duplicate_of is None]
    parts = [
        f"### {key}: {source.name}, budget {', '.join(f'{k} {v:g}' for k, v in gates.items())}",
        "",
        "```",
        table(header, rows),
        "```",
        "",
        f"Search: {len(result.trials)} trials ({len(result.trials) - len(counted)} repeated a recipe), "
        f"{args.jobs} workers, {elapsed / 60:.1f} min; plot: {result.plot}. Frontier (size, quality, latency):",
        "",
        "```",
        frontier_table(result.frontier, best),
        "```",
    ]
    return "\n".join(parts)


def minilm_data(path: Path, work: Path) -> Path:
    tokenizer = common.tokenizer_json(path)
    feeds, how = calibration_data.minilm_feeds(tokenizer, len(calibration_data.SENTENCES))
    print(f"MiniLM data: {how}", file=sys.stderr)
    target = work / "minilm_val.npz"
    if target.exists():  # the same arrays in the same file: a resumed search sees the data it started with
        with np.load(target) as stored:
            if set(stored) == set(feeds) and all(np.array_equal(stored[k], v) for k, v in feeds.items()):
                return target
    np.savez(target, **feeds)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,minilm", help="comma-separated subset of digits,minilm")
    parser.add_argument(
        "--minilm", type=Path, help="all-MiniLM-L6-v2 ONNX export (inputs input_ids, attention_mask, token_type_ids)"
    )
    parser.add_argument("--trials", type=int, default=40, help="digits search: trials (default 40)")
    parser.add_argument("--minilm-trials", type=int, default=12, help="MiniLM search: trials (default 12)")
    parser.add_argument("--jobs", type=int, default=2, help="trials in parallel (default 2)")
    parser.add_argument(
        "--max-time", type=float, default=1800, help="per search: start no trial after this many seconds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the search folders: a search resumes from its study (the baselines are measured again)",
    )
    parser.add_argument("--no-readme", action="store_true", help="print only; leave bench/README.md alone")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    work = common.cache_dir() / "auto-bench"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections, skipped = [], []
    if "digits" in models:
        sections.append(bench(
            "digits", common.ROOT / "fixtures" / "digits_cnn.onnx", common.ROOT / "fixtures" / "digits_cnn_val.npz",
            {"max_accuracy_drop": 0.01},
            {"quantize-only (static)": ["fold", "quantize"],
             "quantize-only (dynamic)": ["fold", "quantize:mode=dynamic"]},
            work, args, args.trials, {},
        ))  # fmt: skip
    if "minilm" in models:
        if args.minilm is None or not args.minilm.exists():
            skipped.append("MiniLM (give --minilm PATH)")
        else:
            sections.append(bench(
                "minilm", args.minilm, minilm_data(args.minilm, work), {"min_cosine": 0.98},
                {"quantize-only (dynamic)": ["fold", "quantize:mode=dynamic"],
                 "quantize-only (weight-only 4 bit)": ["fold", "quantize:mode=weight_only"]},
                work, args, args.minilm_trials, {"batch_size": 8, "latency_runs": 10},
            ))  # fmt: skip
    elapsed = time.perf_counter() - start
    command = common.command_line("auto.py", sys.argv[1:] if argv is None else argv)
    for section in sections:
        print(section + "\n")
    if skipped:
        print("skipped: " + "; ".join(skipped))
    if not args.no_readme:
        run = f"Last run: {dt.date.today().isoformat()}, `{command}`, {elapsed / 60:.1f} min."
        lines = [*__doc__.split("\n\n")[2:4], "", run, "", *(s + "\n" for s in sections)]
        common.write_readme_section("auto", "auto.py: onnxopt auto vs quantize-only, same data, same budget", lines,
                                    ["python bench/auto.py --minilm PATH/TO/all-MiniLM-L6-v2.onnx"])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
