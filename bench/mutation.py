"""Mutation testing of the verdict: mutmut over the gates, the output comparisons, the run's exit codes and the
external-data path checks, then a table of killed / survived per module and every survivor by name.

mutmut (configured in pyproject.toml's [tool.mutmut]) does the work: it copies the package to ``mutants/``,
makes one-line mutations of each function (``>=`` to ``>``, ``+`` to ``-``, a constant changed, a line
dropped...) and runs the tests that call that function in-process against each. Written here: the choice of
functions (:data:`VERDICT`), the summary, and the exit status. ``--all`` runs every mutant of
``only_mutate`` (gates, validation, pipeline, model_io, data; far longer). ``--fail-on-survivor`` exits 1
when a mutant survives (CI prints the score without it: see bench/README.md "Mutation testing" for the
survivors left and why).

    python bench/mutation.py [--all] [--jobs 2] [--fail-on-survivor] [--no-run]
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The functions whose mutants a user could observe in the verdict (mutmut's names: module.x_function,
#: module.xǁClassǁmethod).
VERDICT = [
    "onnxopt.gates.*",
    "onnxopt.validation.x_gate_checks*",
    "onnxopt.validation.xǁ_OutputAccumulatorǁ*",
    "onnxopt.validation.x_cosine*",
    "onnxopt.validation.x_accuracy*",
    "onnxopt.validation.xǁValidationResultǁ*",
    "onnxopt.pipeline.xǁRunǁ_final_validation*",
    "onnxopt.pipeline.xǁRunǁ_hold_out*",  # which rows judge a retrained model
    "onnxopt.data.xǁDatasetǁsplit*",
    "onnxopt.data.xǁDatasetǁ_rows__mutmut*",  # not _rows_that_fit
    "onnxopt.model_io.x_external_data_files*",
]


def results() -> dict[str, str]:
    """mutmut's verdict per mutant name, from ``mutmut results --all true``."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = {}
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("onnxopt"):
            found[name] = status
    return found


def module_of(name: str) -> str:
    return name.split(".x", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--all", action="store_true", help="every mutant of [tool.mutmut] only_mutate, not only the verdict's"
    )
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--fail-on-survivor", action="store_true", help="exit 1 when a mutant survives")
    parser.add_argument("--no-run", action="store_true", help="only summarize the last run's results (mutants/)")
    args = parser.parse_args()
    patterns = [] if args.all else VERDICT
    start = time.perf_counter()
    if not args.no_run:
        log = ROOT / "mutants" / "mutmut-run.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as f:  # mutmut draws a spinner: kept out of the CI log
            run = subprocess.run(["mutmut", "run", "--max-children", str(args.jobs), *patterns], cwd=ROOT, stdout=f,
                                 stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
        if run.returncode != 0:
            print(
                f"mutmut run failed (exit {run.returncode}); its output: {log}\n" + log.read_text()[-3000:],
                file=sys.stderr,
            )
            return 2
    seconds = time.perf_counter() - start
    status = {k: v for k, v in results().items() if not patterns or any(fnmatch.fnmatch(k, p) for p in patterns)}
    by_module: dict[str, Counter] = {}
    for name, verdict in status.items():
        by_module.setdefault(module_of(name), Counter())[verdict] += 1
    kinds = ["killed", "survived", "no tests", "timeout", "suspicious"]
    print(f"{'module':<22}" + "".join(f"{k:>11}" for k in kinds) + f"{'score':>8}")
    total = Counter()
    for module, counts in sorted(by_module.items()):
        total.update(counts)
        tried = sum(counts.values())
        print(
            f"{module:<22}" + "".join(f"{counts[k]:>11}" for k in kinds) + f"{counts['killed'] / max(tried, 1):>8.1%}"
        )
    tried = sum(total.values())
    print(f"{'all':<22}" + "".join(f"{total[k]:>11}" for k in kinds) + f"{total['killed'] / max(tried, 1):>8.1%}")
    print(f"mutation score {total['killed']}/{tried} killed in {seconds:.0f} s (mutmut; 'mutmut show NAME' shows one)")
    survivors = sorted(name for name, verdict in status.items() if verdict != "killed")
    for name in survivors:
        print(f"  {status[name]:<10} {name}")
    return 1 if args.fail_on_survivor and any(status[n] == "survived" for n in survivors) else 0


if __name__ == "__main__":
    sys.exit(main())
