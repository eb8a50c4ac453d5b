"""How long `onnxopt --help` takes, as a ratio to a bare Python start-up (one run, best of N each).

    python bench/cli_startup.py [--runs 15]

Heavy modules (onnx, onnxruntime, numpy, onnx_ir) are imported only by the commands that need them, so
`--help` costs little more than starting Python. Absolute times on these shared machines are noise;
the ratio and the difference are what to read.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time


def best_of(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    onnxopt = shutil.which("onnxopt") or sys.exit("onnxopt is not installed (pip install -e .)")
    rows = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("onnxopt --help", [onnxopt, "--help"]),
        ("onnxopt passes (loads plugins)", [onnxopt, "passes"]),
        ("python -c 'import onnxruntime, onnx_ir'", [sys.executable, "-c", "import onnxruntime, onnx_ir"]),
    ]
    results = [(label, best_of(command, args.runs)) for label, command in rows]
    base = results[0][1]
    print(f"{'command':42} {'best ms':>8} {'ratio':>6}")
    for label, seconds in results:
        print(f"{label:42} {seconds * 1e3:8.1f} {seconds / base:6.2f}")


if __name__ == "__main__":
    main()
