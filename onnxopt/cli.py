"""The ``onnxopt`` command: a thin layer over :mod:`onnxopt.api`.

The plugins load first, since they add commands (``onnxopt_register_commands``: ``onnxopt distill`` is the
distill plugin's) and ``auto`` gets a ``--NAME`` flag for every on-request pass; onnx, onnxruntime and the
passes' work load only inside a command. Exit codes: 0 ok, 1 a validation gate failed, 2 bad input or
usage, 3 a plugin failed. Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from onnxopt.errors import OnnxoptError, UsageError
from onnxopt.gates import Gates
from onnxopt.plugins import PluginManager, get_plugin_manager

if TYPE_CHECKING:
    from onnxopt.report import Report


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", dest="plugins", action="append", default=[], metavar="NAME",
                        help="load a plugin (entry-point name or module); -p no:NAME blocks one")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the machine-readable report on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", "-v", action="store_true", help="also print the time and memory of each phase")


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="dataset: file.npz, a folder of .npy/.npz, synthetic:N, or what a data plugin "
        "reads (an image folder, text + tokenizer, WAV files, loader.py:fn; see README)",
    )
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=DxD",
                        help="the shape of an input in synthetic test data, e.g. input=1x3x224x224 "
                             "(default: derived until the original runs; "
                             "the written model keeps its dims)")  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, help="rows per onnxruntime run (default: up to 32, fewer for large inputs)"
    )
    parser.add_argument("--seed", type=int, help="seed for synthetic data and passes (default 0)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's)")
    parser.add_argument("--latency-runs", type=int, help="interleaved latency rounds (0 skips; default 20)")
    _gate_options(parser)


def _gate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", action="append", default=[], metavar="[OUTPUT=]NAME[>=T]",
                        help="judge outputs by a task metric (ctc, mask_iou, embedding, neighbours, detection, "
                             "or file.py:function); 'none' turns off the metrics detected by default")  # fmt: skip
    for gate in dataclasses.fields(Gates):
        flag = "--" + gate.name.replace("_", "-")
        parser.add_argument(flag, type=float, dest="gate_" + gate.name, help="gate: " + gate.metadata["help"])


def build_parser(pm: PluginManager | None = None) -> argparse.ArgumentParser:
    """The whole command line: the host's commands, and the commands and flags of the plugins ``pm`` loaded."""
    parser = argparse.ArgumentParser(
        prog="onnxopt",
        description="Make ONNX models smaller and faster for onnxruntime, and prove they still agree.",
        epilog="exit codes: 0 compared and within the gates, 1 validation gate failed, 2 bad input or usage, "
        "3 a plugin failed, 4 written but not validated",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-p", dest="plugins_first", action="append", default=[], metavar="NAME",
                        help="load a plugin, or block one with -p no:NAME (decides which commands exist)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    opt = commands.add_parser("optimize", help="run passes on a model, validate, write the result")
    opt.add_argument("model", help="input model (.onnx, or any format a loader plugin reads)")
    opt.add_argument("-o", "--output", help="where to write the optimized model")
    opt.add_argument("--pass", dest="passes", action="append", default=[], metavar="NAME[:k=v,...]",
                     help="a pass to run, in order; list values use ';' (exclude=a;b)")  # fmt: skip
    opt.add_argument("--recipe", help="TOML recipe: passes, data, gates (flags add to it)")
    opt.add_argument("--in-place", action="store_true", help="allow -o to name the input file")
    opt.add_argument(
        "--on-failure", choices=["rollback", "stop"], help="a failing pass is rolled back (default) or stops the run"
    )
    opt.add_argument("--no-validate-each-pass", action="store_true", help="validate only the written model")
    opt.add_argument(
        "--no-validate", action="store_true", help="compare nothing; the run ends 'not validated' (exit 4)"
    )
    opt.add_argument("--val", help="data the verdict is judged on (default: --data, else synthetic inputs)")
    ext = opt.add_mutually_exclusive_group()
    ext.add_argument("--external-data", dest="external_data", action="store_true", default=None,
                     help="always write weights to <output>.data")  # fmt: skip
    ext.add_argument("--no-external-data", dest="external_data", action="store_false", help="never use external data")
    _data_options(opt)
    _common(opt)

    val = commands.add_parser("validate", help="compare a candidate with a reference model in onnxruntime")
    val.add_argument("reference")
    val.add_argument("candidate")
    val.add_argument("--retrained", action="store_true",
                     help="the candidate was retrained (a distilled student): judged by agreement (task metrics, "
                          "top-1 on class scores, cosine >= 0.9) where no gate is set, not by cosine 0.99")  # fmt: skip
    _data_options(val)
    _common(val)

    ins = commands.add_parser("inspect", help="ops, parameters, sizes, sparsity and unique values of a model")
    ins.add_argument("model")
    ins.add_argument("--no-tensors", action="store_true", help="skip the per-initializer table")
    _common(ins)

    _auto_parser(commands, _on_request_passes(pm))

    lst = commands.add_parser("passes", help="list installed passes and their options")
    _common(lst)
    plg = commands.add_parser("plugins", help="list loaded plugins, their versions and hooks")
    _common(plg)
    if pm is not None:
        pm.hook.onnxopt_register_commands(add_command=_command_adder(commands))
    return parser


def _command_adder(commands: argparse._SubParsersAction) -> Callable[..., argparse.ArgumentParser]:
    """What a plugin's ``onnxopt_register_commands`` gets: ``add_command(name, help=, handler=, gates=)``."""

    def add_command(name: str, *, help: str, handler: Callable[[argparse.Namespace], int],  # noqa: A002
                    gates: bool = False) -> argparse.ArgumentParser:  # fmt: skip
        if name in commands.choices:
            raise UsageError(f"two commands are named {name!r} (a plugin's command clashes with another)")
        parser = commands.add_parser(name, help=help)
        parser.set_defaults(handler=handler, plugin_gates=gates)
        if gates:
            _gate_options(parser)
        _common(parser)
        return parser

    return add_command


def _on_request_passes(pm: PluginManager | None) -> list[tuple[str, str]]:
    """(name, summary) of every pass whose SearchHint says ``auto`` tries it only when asked (``--NAME``)."""
    if pm is None:
        return []
    from onnxopt.passes import PassRegistry

    return [
        (spec.name, spec.summary) for spec in PassRegistry.from_plugins(pm) if spec.search and spec.search.on_request
    ]


def _auto_parser(commands: argparse._SubParsersAction, on_request: list[tuple[str, str]]) -> None:
    auto = commands.add_parser("auto", help="search pass combinations for the smallest / fastest model within a budget",
                               epilog="exit 0: the written model meets the budget; exit 1: none did, the most accurate "
                                      "one was written (do not ship it)")  # fmt: skip
    auto.add_argument("model", help="input model (.onnx)")
    auto.add_argument("-o", "--output", required=True, help="where to write the chosen model")
    auto.add_argument(
        "--max-drop", type=float, default=0.01, help="max accuracy drop with labelled data (default 0.01)"
    )
    auto.add_argument("--objective", choices=["size", "latency", "balanced"], default="size",
                      help="minimise size, latency, or their geometric mean (default size)")  # fmt: skip
    auto.add_argument("--max-trials", type=int, default=30, help="stop after this many trials in all (default 30)")
    auto.add_argument("--max-time", type=float, help="start no trial after this many seconds")
    auto.add_argument("--jobs", type=int, default=1, help="trials run in parallel (default 1)")
    auto.add_argument("--executor", choices=["process", "ray"], default="process",
                      help="worker processes on this machine, or Ray tasks (RAY_ADDRESS or a local Ray)")  # fmt: skip
    auto.add_argument(
        "--workdir", help="study, trials, report and plot (default: OUTPUT's stem + .auto); reruns resume"
    )
    for name, summary in on_request:  # e.g. --distill: passes too slow to try unless asked for
        auto.add_argument(f"--{name}", action="append_const", const=name, dest="requested", default=[],
                          help=f"also search the {name} pass ({summary})")  # fmt: skip
    auto.add_argument("--keep-models", action="store_true", help="keep every trial's model, not only the frontier's")
    auto.add_argument("--val", help="data every candidate is judged on (default: --data)")
    _data_options(auto)
    _common(auto)


def _gates(args: argparse.Namespace) -> dict[str, float]:
    values = {gate.name: getattr(args, "gate_" + gate.name) for gate in dataclasses.fields(Gates)}
    return {name: value for name, value in values.items() if value is not None}


def _shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    from onnxopt.data import parse_shape

    return dict(parse_shape(text) for text in args.shape)


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_optimize(args: argparse.Namespace) -> int:
    from onnxopt import api

    if args.output is None:
        if not args.in_place:
            raise UsageError("optimize needs -o OUTPUT (or --in-place to replace the input)")
        args.output = args.model
    if not args.passes and not args.recipe:
        raise UsageError("no passes to run: give --pass NAME or --recipe FILE (see 'onnxopt passes')")
    report = api.optimize(
        args.model,
        args.output,
        passes=args.passes,
        recipe=args.recipe,
        data=args.data,
        gates=_gates(args),
        shapes=_shapes(args),
        plugins=args.plugins,
        in_place=args.in_place,
        quiet=args.quiet,
        on_failure=args.on_failure,
        seed=args.seed,
        batch_size=args.batch_size,
        threads=args.threads,
        latency_runs=args.latency_runs,
        external_data=args.external_data,
        validate_each_pass=False if args.no_validate_each_pass else None,
        val=args.val,
        metrics=args.metric or None,
        validate=False if args.no_validate else None,
    )
    return emit_report(report, args)


def emit_report(report: Report, args: argparse.Namespace) -> int:
    """Print a run's report as the command's flags ask (``--json``, ``--verbose``) and return its exit code.

    For a plugin's command too (``onnxopt.emit_report``): every command that runs the pipeline reports alike.
    """
    from onnxopt.report import render_costs, render_report, to_json

    _print(to_json(report) if args.json else render_report(report))
    if args.verbose and not args.json:
        _print(render_costs(report))
    if not report.ok:
        sys.stderr.write(f"onnxopt: {report.message}\n")
    return report.exit_code


def cmd_auto(args: argparse.Namespace) -> int:
    from pathlib import Path

    from onnxopt import api
    from onnxopt.auto.search import render_text
    from onnxopt.errors import UsageError

    if args.data is None:
        raise UsageError("auto needs --data (labelled .npz for an accuracy budget, or unlabelled inputs)")
    result = api.auto(
        args.model, args.output, data=args.data, max_drop=args.max_drop, objective=args.objective, gates=_gates(args),
        max_trials=args.max_trials, max_time=args.max_time, jobs=args.jobs, executor=args.executor,
        workdir=args.workdir, seed=args.seed or 0, requested=getattr(args, "requested", []),
        keep_models=args.keep_models, plugins=args.plugins, quiet=args.quiet, shapes=_shapes(args),
        batch_size=args.batch_size, threads=args.threads, latency_runs=args.latency_runs, val=args.val,
        metrics=args.metric or None,
    )  # fmt: skip
    _print(Path(result.report).read_text(encoding="utf-8") if args.json else render_text(result))
    if not result.ok:
        sys.stderr.write(f"onnxopt: {result.message}\n")
    return result.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    from onnxopt import api
    from onnxopt.errors import EXIT_GATE_FAILED, EXIT_NOT_VALIDATED
    from onnxopt.report import render_validation, to_json

    result = api.validate(
        args.reference,
        args.candidate,
        data=args.data,
        gates=_gates(args),
        shapes=_shapes(args),
        latency_runs=20 if args.latency_runs is None else args.latency_runs,
        threads=args.threads or 0,
        seed=args.seed or 0,
        batch_size=args.batch_size,
        plugins=args.plugins,
        quiet=args.quiet,
        metrics=args.metric,
        retrained=args.retrained,
    )
    _print(to_json(result) if args.json else render_validation(result))
    if not result.passed:
        sys.stderr.write(f"onnxopt: validation failed: {result.failure_reason()}\n")
        return EXIT_GATE_FAILED
    if not result.compared:
        sys.stderr.write("onnxopt: not validated: the outputs were not compared\n")
        return EXIT_NOT_VALIDATED
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from onnxopt import api
    from onnxopt.report import render_summary, to_json

    summary = api.inspect(args.model, tensors=not args.no_tensors)
    _print(to_json(summary) if args.json else render_summary(summary, args.model))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    from onnxopt.passes import PassRegistry
    from onnxopt.report import to_json

    registry = PassRegistry.from_plugins(args.plugin_manager)
    if args.json:
        rows = [
            {
                "name": spec.name,
                "plugin": spec.plugin,
                "summary": spec.summary,
                "needs_data": spec.needs_data if isinstance(spec.needs_data, bool) else "depends on options",
                "handles_subgraphs": spec.handles_subgraphs,
                "options": [
                    {"name": o.name, "type": o.type_name, "default": o.default, "help": o.help}
                    for o in spec.option_fields()
                ],
            }
            for spec in registry
        ]
        _print(to_json(rows))
        return 0
    for spec in registry:
        flags = [
            flag for flag, on in (("needs data", spec.needs_data is True), ("subgraphs", spec.handles_subgraphs)) if on
        ]
        _print(f"{spec.name}  ({spec.plugin}{'; ' + ', '.join(flags) if flags else ''})")
        _print(f"    {spec.summary}")
        for o in spec.option_fields():
            _print(f"    {o.name}: {o.type_name} = {o.default!r}  — {o.help}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from onnxopt.plugins import plugin_infos
    from onnxopt.report import table, to_json

    infos = plugin_infos(args.plugin_manager)
    if args.json:
        _print(to_json(infos))
    else:
        rows = [[i.name, i.distribution or "-", i.version or "-", ", ".join(i.hooks)] for i in infos]
        _print(table(["plugin", "distribution", "version", "hooks"], rows))
    return 0


COMMANDS = {
    "optimize": cmd_optimize,
    "auto": cmd_auto,
    "validate": cmd_validate,
    "inspect": cmd_inspect,
    "passes": cmd_passes,
    "plugins": cmd_plugins,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # the plugins first: they add commands and flags to the parser
        pm = get_plugin_manager(_plugin_requests(argv))
        parser = build_parser(pm)
    except OnnxoptError as exc:
        sys.stderr.write(f"onnxopt: error: {_one_line(exc)}\n")
        return exc.exit_code
    args = parser.parse_args(argv)
    args.plugin_manager = pm
    args.plugins = _plugin_requests(argv)  # before the command or after it, alike
    if args.version:
        from onnxopt import __version__

        _print(f"onnxopt {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return run_command(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``with`` / ``finally`` (temporary and staging folders) cleans
    up; a BaseException, so no ``except Exception`` (a pass's failure handling) takes it for a pass error."""


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise _Terminated


def _plugin_requests(argv: Sequence[str]) -> list[str]:
    """The ``-p NAME`` / ``-pNAME`` values, read before parsing: they decide which commands exist."""
    requests = []
    for index, token in enumerate(argv):
        if token == "-p" and index + 1 < len(argv):
            requests.append(argv[index + 1])
        elif token.startswith("-p") and len(token) > 2 and not token.startswith("--"):
            requests.append(token[2:].lstrip("="))
    return requests


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command, turning known errors into one line and an exit code."""
    from onnxopt.errors import EXIT_BAD_INPUT

    try:
        if getattr(args, "plugin_gates", False):
            args.gates = _gates(args)
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args)
    except OnnxoptError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"onnxopt: error: {_one_line(exc)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("onnxopt: interrupted\n")
        return 130
    except _Terminated:
        sys.stderr.write("onnxopt: terminated\n")
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # `onnxopt passes | head`: the reader left; say nothing more, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141
    except MemoryError:
        sys.stderr.write("onnxopt: error: out of memory\n")
        return EXIT_BAD_INPUT


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
