"""fold's time against graph size: chains of 10 000 to 100 000 Adds, and the fitted exponent.

    python bench/fold_scaling.py [--sizes 10000,30000,100000] [--kinds own,shared,live] [--timeout 900] [--no-readme]

Three chains of N Add nodes, built with onnx.helper, each ending in ``y = x + a_N``:

- own:    ``a_i = a_{i-1} + c_i``, every ``c_i`` its own one-element constant: all N Adds fold into one constant;
- shared: the same chain reading one constant ``c`` N times (a value with N uses);
- live:   ``a_i = a_{i-1} + c_i`` starting from the input ``x``: nothing folds, every step still walks N nodes.

Each (chain, N) runs in a fresh subprocess: a warm-up fold of a 10-node chain (lazy imports), then
``onnxopt.apply_passes(model, ["fold"])`` on the loaded onnx_ir model, timed in wall-clock and in the
process's CPU time (the machine is shared: CPU time is what the fitted exponent uses). The folded constant
is checked against the sum the chain computes. The exponent k of ``time ~ N^k`` is the least-squares slope
of log(CPU time) against log(N) over the sizes that finished: 1 is linear, 2 quadratic.

Prints a markdown table and (unless ``--no-readme``) writes it, with the command and date, into the
``fold_scaling`` section of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

KINDS = ("own", "shared", "live")


def chain(kind: str, n: int):
    """The chain model of ``kind`` with ``n`` Adds (an onnx.ModelProto) and the constant it folds to (or None)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [numpy_helper.from_array(np.array([1.0], np.float32), "c")], []
    previous, total = ("x", None) if kind == "live" else ("c", 1.0)
    for i in range(n):
        constant = "c" if kind == "shared" else f"c{i}"
        if kind != "shared":
            value = float(i % 7 + 1)  # integers: the float32 sum is exact, whatever the order of folding
            inits.append(numpy_helper.from_array(np.array([value], np.float32), constant))
        total = None if total is None else total + (1.0 if kind == "shared" else value)
        nodes.append(helper.make_node("Add", [previous, constant], [f"a{i}"]))
        previous = f"a{i}"
    nodes.append(helper.make_node("Add", ["x", previous], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), total


def measure(kind: str, n: int) -> dict:
    """Fold one chain in this process; wall and CPU seconds of the fold call alone, and the check."""
    import onnx_ir as ir

    import onnxopt

    onnxopt.apply_passes(ir.from_proto(chain(kind, 10)[0]), ["fold"])  # warm-up: imports, plugin discovery
    proto, total = chain(kind, n)
    model = ir.from_proto(proto)
    wall, cpu = time.perf_counter(), time.process_time()
    folded = onnxopt.apply_passes(model, ["fold"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    nodes = onnxopt.count_nodes(folded)
    if total is None:
        correct = nodes == n + 1
    else:
        (node,) = folded.graph
        constant = next(v for v in node.inputs if v.const_value is not None)
        correct = nodes == 1 and float(constant.const_value.numpy().reshape(-1)[0]) == total
    return {"kind": kind, "n": n, "wall": wall, "cpu": cpu, "nodes": nodes, "correct": correct}


def run(kind: str, n: int, timeout: float) -> dict:
    """``measure`` in a fresh subprocess; a timeout or a crash is a row that says so."""
    result, error = common.run_worker([sys.executable, __file__, "--measure", kind, str(n)], timeout)
    return result or {"kind": kind, "n": n, "error": error}


def exponent(rows: list[dict]) -> float | None:
    """Least-squares slope of log(cpu) on log(n); None with fewer than two finished sizes."""
    points = [(math.log(r["n"]), math.log(r["cpu"])) for r in rows if "cpu" in r and r["cpu"] > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def table(results: list[dict], kinds: list[str], sizes: list[int]) -> str:
    lines = []
    for kind in kinds:
        rows = [r for r in results if r["kind"] == kind]
        cells = []
        for n in sizes:
            r = next(r for r in rows if r["n"] == n)
            if "error" in r:
                cells.append(r["error"])
            else:
                check = "" if r["correct"] else " (WRONG RESULT)"
                cells.append(f"{r['cpu']:.1f} s CPU / {r['wall']:.1f} s wall{check}")
        k = exponent(rows)
        lines.append([kind, *cells, "-" if k is None else f"{k:.2f}"])
    header = ["chain", *(f"N = {n:,}" for n in sizes), "exponent k (time ~ N^k)"]
    return common.markdown_table(header, lines, "l" + "r" * (len(sizes) + 1))


def write_readme(text: str, command: str, elapsed: float) -> None:
    import onnx_ir
    import onnxscript

    prose: list[str] = []  # the docstring's description, paragraphs joined, list items kept on their lines
    for line in __doc__.split("\n\n", 2)[2].split("Prints a markdown")[0].strip().splitlines():
        if prose and prose[-1] and line.strip() and not line.startswith("- "):
            prose[-1] += " " + line.strip()
        else:
            prose.append(line)
    environment = (f"onnxscript {onnxscript.__version__}, onnx-ir {onnx_ir.__version__}, "
                   f"Python {platform.python_version()}, 2 CPUs shared with other jobs")  # fmt: skip
    common.write_readme_section(
        "fold_scaling",
        "fold_scaling.py: fold's time on chains of 10 000 to 100 000 Adds",
        [*prose, "", *common.run_lines(command, elapsed, environment, [], [text])],
        [command],
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure"]:
        common.print_result(measure(argv[1], int(argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (chain, size) before it is killed")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown chain kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    start = time.perf_counter()
    results = []
    for kind in kinds:
        for n in sizes:
            results.append(run(kind, n, args.timeout))
            print(json.dumps(results[-1]), flush=True)
    text = table(results, kinds, sizes)
    print(text)
    if not args.no_readme:
        write_readme(text, common.command_line("fold_scaling.py", argv), time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
