"""How far each optimizer folds: onnx's backend node tests with every input made a constant.

    python bench/fold_node_suite.py [--tools onnxopt,onnxscript,onnxsim] [--workers 2] [--names test_a,test_b]
                                    [--node-tests DIR] [--json OUT.json] [--no-readme]

Every node test of onnx 1.22.0 (``tests/node_suite.py`` fetches them, or ``--node-tests DIR`` names a
folder of them) has its inputs turned into initializers holding the test's data, so every op in it can be
evaluated ahead of time. A case counts when onnxruntime passes that constant model against the shipped
outputs (not random, every input a tensor). Then each optimizer runs on it, in the same worker process:

- onnxopt:    ``onnxopt.apply_passes(model, ["fold"])``
- onnxscript: ``onnxscript.optimizer.optimize(model)`` with its defaults
- onnxsim:    ``onnxsim.simplify(model)`` with its defaults (rows say why when it is not installed)

*folded* means nothing but Constant nodes is left; *broken* means onnxruntime on the result no longer
matches the shipped outputs (rtol 1e-3, atol 1e-5), cannot load it or cannot run it; *failed* means the
optimizer raised. Cases run in worker processes (a crash or a hang costs one case). Prints a table, the op
types each optimizer leaves most often, the cases a peer folds that onnxopt does not, and (unless
``--no-readme``) writes them into the ``fold_node_suite`` section of bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import common  # noqa: E402
import node_suite  # noqa: E402


def summarize(results: list, tools: list[str]) -> tuple[str, dict[str, Counter]]:
    """The markdown table and, per tool, the op types left in cases it did not fold."""
    compared = [r for r in results if r.outcome == "compared"]
    crashed = [r for r in results if r.outcome == "crash"]
    lines = []
    left: dict[str, Counter] = {}
    for tool in tools:
        rows = [r.tools.get(tool) for r in compared]
        ran = [row for row in rows if row is not None]
        failed = sum(bool(row["error"]) for row in ran) + sum(r.reason.startswith(f"tool:{tool}") for r in crashed)
        folded = sum(not row["error"] and not row["left"] for row in ran)
        broken = sum(bool(row["broken"]) for row in ran if not row["error"])
        left[tool] = Counter(op for row in ran if not row["error"] for op in set(row["left"]))
        lines.append([tool, len(compared), folded, len(compared) - folded, broken, failed])
    header = ["optimizer", "cases", "folded to constants", "not folded", "broken", "failed"]
    return common.markdown_table(header, lines, "lrrrrr"), left


def details(results: list, tools: list[str], left: dict[str, Counter]) -> list[str]:
    compared = [r for r in results if r.outcome == "compared"]
    out = []
    for tool in tools:
        common = ", ".join(f"{op} ({n})" for op, n in left[tool].most_common(12))
        out.append(f"- {tool} leaves (op: cases): {common or 'nothing'}")
        broken = [f"{r.name} ({r.tools[tool]['broken'][:80]})" for r in compared if r.tools.get(tool, {}).get("broken")]
        if broken:
            out.append(f"- {tool} broke: " + "; ".join(broken[:20]))
    for peer in (t for t in tools if t != "onnxopt"):
        ahead = [r.name for r in compared if "onnxopt" in r.tools and peer in r.tools
                 and r.tools["onnxopt"]["left"] and not r.tools[peer]["left"] and not r.tools[peer]["error"]
                 and not r.tools[peer]["broken"]]  # fmt: skip
        out.append(f"- folded by {peer}, not by onnxopt ({len(ahead)}): " + (", ".join(ahead[:40]) or "none"))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", default=",".join(node_suite.CONSTANT_TOOLS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per case (all optimizers) before it is killed"
    )
    parser.add_argument("--names", default="", help="comma-separated test names (default: every test)")
    parser.add_argument(
        "--node-tests", type=Path, default=None, help="a folder of node tests (default: fetched into the cache)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every case's result to this file")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(node_suite.CONSTANT_TOOLS))
    if unknown:
        parser.error(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(node_suite.CONSTANT_TOOLS)}")
    versions = {tool: common.installed(tool) for tool in tools}
    missing = [t for t, v in versions.items() if v is None]
    tools = [t for t in tools if versions[t] is not None]
    folder = args.node_tests.expanduser() if args.node_tests else node_suite.node_tests_dir()
    names = [n for n in args.names.split(",") if n] or node_suite.node_test_names(folder)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxopt-constant-") as workdir:
        results = node_suite.run_cases([folder / n for n in names], Path(workdir), workers=args.workers,
                                       timeout=args.timeout, mode="constant:" + ",".join(tools))  # fmt: skip
    elapsed = time.perf_counter() - start
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    table, left = summarize(results, tools)
    notes = details(results, tools, left)
    not_run = Counter(r.outcome for r in results)
    head = (f"{len(names)} node tests: {not_run['compared']} compared, {not_run['not-run']} not run (random, an input "
            f"that is not a tensor, or onnxruntime fails the constant model), {not_run['crash']} killed")  # fmt: skip
    print(head)
    print(table)
    print("\n".join(notes))
    if not args.no_readme:
        environment = (
            ", ".join(f"{t} {v}" for t, v in versions.items() if v) + f", Python {platform.python_version()}, 2 CPUs"
        )
        skipped = [f"{t} (not installed)" for t in missing]
        shown = [a for i, a in enumerate(argv) if a != "--no-readme" and "--json" not in (a, argv[i - 1] if i else "")]
        command = common.command_line("fold_node_suite.py", shown)
        doc = " ".join(__doc__.split("\n\n", 2)[2].split("Prints a table")[0].split())
        tables = [head + ".", table, "\n".join(notes)]
        lines = [doc, "", *common.run_lines(command, elapsed, environment, skipped, tables)]
        title = "fold_node_suite.py: node tests with constant inputs — how much each optimizer folds"
        peer = "python -m pip install onnxsim   # in a separate venv (--system-site-packages): not a dependency"
        common.write_readme_section("fold_node_suite", title, lines, [peer, command])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
