"""The checks every registered pass must pass, as plain functions that raise AssertionError with the reason.

test_contract.py runs them over every pass a :class:`~onnxopt.session.Session` registers, so a third-party
pass gets the same proof as a built-in one; test_meta.py runs the same functions on passes broken on purpose
(tests/faulty_plugins.py, liars.py) to show each check catches what it is for. onnx's checker and onnxruntime
judge the models; the passes run as the host runs them (``optimize``, or ``spec.create(options, context)(model)``
as the host's ``onnxopt_run_pass`` does), no mocks.

The subgraph check uses fixtures/build_contract_fixtures.py's twins: ``contract_plain.onnx`` holds the blocks
that ``contract_subgraphs.onnx`` holds inside an If and a Loop. What a pass does to the plain twin says what it
owes each subgraph: if it changed the twin, it must change every subgraph (when it says it handles them), and
if it kept the twin's outputs, it must keep the If / Loop model's outputs.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

import onnxopt
from onnxopt.errors import OnnxoptError
from onnxopt.passes import PassSpec, parse_pass_argument
from onnxopt.session import Session

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
EXAMPLE_PLUGIN = ROOT / "examples" / "strip-metadata-plugin"
EXAMPLE_MODULE = "onnxopt_strip_metadata"


def third_party_plugins() -> tuple[str, ...]:
    """``-p`` requests that load the example third-party plugin, as its README's ``PYTHONPATH=... -p
    onnxopt_strip_metadata`` does. The module is loaded from its file: with its folder on sys.path, the egg-info
    a ``pip install`` of it leaves there would hand its entry point to every other test's plugin manager."""
    if EXAMPLE_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(EXAMPLE_MODULE, EXAMPLE_PLUGIN / f"{EXAMPLE_MODULE}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[EXAMPLE_MODULE] = module
        spec.loader.exec_module(module)
    return (EXAMPLE_MODULE,)


def is_slow(spec: PassSpec) -> bool:
    """A pass ``onnxopt auto`` searches only on request takes long (its SearchHint says so: distill trains)."""
    return spec.search is not None and spec.search.on_request


# ---- 1. options ---------------------------------------------------------------------------------------------


def listing(plugins: Sequence[str], pythonpath: Sequence[Path] = ()) -> dict[str, dict[str, Any]]:
    """``onnxopt passes --json`` with these plugins, as a user runs it (a subprocess), by pass name."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    requests = [arg for plugin in plugins for arg in ("-p", plugin)]
    done = subprocess.run([sys.executable, "-m", "onnxopt.cli", *requests, "passes", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"onnxopt passes --json failed: {done.stderr}"
    return {row["name"]: row for row in json.loads(done.stdout)}


def cli_text(value: Any) -> str:
    """How a user writes ``value`` in ``--pass NAME:option=VALUE`` (lists take ``;`` between items)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ";".join(cli_text(item) for item in value)
    return str(value)


def check_options(spec: PassSpec, row: Mapping[str, Any] | None) -> None:
    """The defaults build; every option has help in ``onnxopt passes --json`` and its default parses back from
    the text a user would type (``--pass``) and from the listed JSON value (a recipe), to the same options."""
    assert spec.summary.strip(), f"pass {spec.name!r} has no summary"
    try:
        defaults = spec.parse_options({})
    except OnnxoptError as exc:
        raise AssertionError(f"pass {spec.name!r}: its defaults do not build: {exc}") from exc
    assert row is not None, f"`onnxopt passes --json` does not list {spec.name!r}"
    listed = {option["name"]: option for option in row["options"]}
    fields = spec.option_fields()
    assert list(listed) == [info.name for info in fields], f"pass {spec.name!r}: listed options differ from its fields"
    for info in fields:
        assert listed[info.name]["help"].strip(), f"pass {spec.name!r}: option {info.name!r} has no help"
        forms = {"--pass text": f"{spec.name}:{info.name}={cli_text(info.default)}",
                 "JSON value": {info.name: listed[info.name]["default"]}}  # fmt: skip
        for form, raw in forms.items():
            try:
                parsed = spec.parse_options(parse_pass_argument(raw)[1] if isinstance(raw, str) else raw)
            except OnnxoptError as exc:
                raise AssertionError(f"pass {spec.name!r}: option {info.name!r}: the default as {form} {raw!r} "
                                     f"does not parse: {exc}") from exc  # fmt: skip
            assert parsed == defaults, f"pass {spec.name!r}: option {info.name!r}: {form} {raw!r} parses to {parsed}"


# ---- 2, 5. the public API on a real model, the output checked and run ---------------------------------------


def feeds(path: Path, rows: int = 4) -> dict[str, np.ndarray]:
    """The first rows of the fixture's calibration split (``<model>_calib.npz``), as onnxruntime inputs."""
    with np.load(calib(path)) as data:
        return {name: data[name][:rows] for name in data.files if name != "labels"}


def calib(path: Path) -> Path:
    return FIXTURES / ("contract_calib.npz" if path.stem.startswith("contract_") else f"{path.stem}_calib.npz")


def run_model(model: onnx.ModelProto | Path, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The model passes onnx's checker, loads in onnxruntime and runs on ``inputs`` to finite outputs."""
    proto = onnx.load(model) if isinstance(model, Path) else model
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise AssertionError(f"rejected by the onnx checker: {str(exc).strip().splitlines()[0]}") from exc
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / NotImplemented types
        raise AssertionError(f"onnxruntime cannot load it: {type(exc).__name__}: {exc}") from exc
    try:
        outputs = session.run(None, dict(inputs))
    except Exception as exc:
        raise AssertionError(f"onnxruntime cannot run it: {type(exc).__name__}: {exc}") from exc
    for info, value in zip(session.get_outputs(), outputs):
        value = np.asarray(value)
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), f"output {info.name!r} is not finite"
    return outputs


def check_optimize(spec: PassSpec, source: Path, output: Path, plugins: Sequence[str]) -> list[np.ndarray]:
    """``onnxopt.optimize`` with the pass at its defaults keeps (or skips) it, and the written model passes the
    checker, loads in onnxruntime and runs to outputs of the original's shapes and types; returns them."""
    report = onnxopt.optimize(source, output, passes=[spec.name], data=calib(source), latency_runs=0,
                              default_gates=False, plugins=plugins)  # fmt: skip
    (step,) = report.steps
    assert report.exit_code == 0 and step.status in ("kept", "unchanged"), (
        f"pass {spec.name!r} on {source.name}: {step.status}: {report.message}"
    )
    inputs = feeds(source)
    got, want = run_model(output, inputs), run_model(source, inputs)
    assert [(np.shape(g), np.asarray(g).dtype) for g in got] == [(np.shape(w), np.asarray(w).dtype) for w in want], (
        f"pass {spec.name!r} on {source.name}: the outputs' shapes or types changed"
    )
    return got


# ---- 3. what a pass does to the model it is given -----------------------------------------------------------


@dataclass
class Run:
    """One pass run in memory: the pass object, what it returned, and its input before and after."""

    pass_: ir.passes.PassBase
    modified: bool
    output: onnx.ModelProto = field(repr=False)
    before: bytes = field(repr=False)
    after: bytes = field(repr=False)


def serialized(model: ir.Model) -> bytes:
    return ir.serde.serialize_model(model).SerializeToString()


def run_in_memory(session: Session, spec: PassSpec, path: Path) -> Run:
    """Build the pass at its defaults and call it on the loaded model, as the host's ``onnxopt_run_pass`` does
    (with the run's data when it needs some); the result is serialized before the run's folder goes away."""
    model = session.load(path)
    options = spec.parse_options({})
    with session.context(reference_path=path) as context:
        if spec.requires_data(options):
            context.dataset = session.open_dataset(str(calib(path)), model)
        pass_ = spec.create(options, context)
        assert isinstance(pass_, ir.passes.PassBase), f"{spec.name!r}: create() built {pass_!r}, not an onnx_ir pass"
        before = serialized(model)
        result = pass_(model)
        assert isinstance(result, ir.passes.PassResult), f"{spec.name!r} returned {result!r}, not a PassResult"
        return Run(pass_, bool(result.modified), ir.serde.serialize_model(result.model), before, serialized(model))


def run_or_refusal(session: Session, spec: PassSpec, path: Path) -> Run | OnnxoptError:
    """:func:`run_in_memory`, or the error with which the pass refused the model (for :func:`check_subgraphs`)."""
    try:
        return run_in_memory(session, spec, path)
    except OnnxoptError as exc:
        return exc


def check_input(name: str, run: Run) -> None:
    """A pass that declares it does not change its input (an onnx_ir FunctionalPass) leaves it byte for byte as
    it was; a pass that says it did not modify the model returns it as it was."""
    kind = type(run.pass_).__name__
    if not run.pass_.changes_input:
        assert run.after == run.before, f"{name!r} ({kind}) declares changes_input=False but changed its input model"
    if not run.modified:
        assert run.output.SerializeToString() == run.before, f"{name!r} ({kind}) said modified=False but changed it"


# ---- 4. subgraphs -------------------------------------------------------------------------------------------


def _content(graph: onnx.GraphProto) -> tuple[list[bytes], list[bytes], str]:
    """What a graph computes, without names and without its nodes' subgraphs: nodes (op, attributes, doc
    strings) and initializer values, each sorted."""
    nodes = []
    for node in graph.node:
        node = copy.deepcopy(node)
        for name in ("name", "input", "output"):
            node.ClearField(name)
        kept = [a for a in node.attribute if a.type not in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
        node.ClearField("attribute")
        for attribute in kept:
            if attribute.HasField("t"):
                attribute.t.name = ""
            node.attribute.append(attribute)
        nodes.append(node.SerializeToString())
    tensors = []
    for tensor in graph.initializer:
        tensor = copy.deepcopy(tensor)
        tensor.name = ""
        tensors.append(tensor.SerializeToString())
    return sorted(nodes), sorted(tensors), graph.doc_string


def subgraphs(model: onnx.ModelProto) -> dict[str, onnx.GraphProto]:
    """The main graph's subgraphs by ``op_type.attribute`` (``If.then_branch``, ``Loop.body``, ...)."""
    found: dict[str, onnx.GraphProto] = {}
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                key = f"{node.op_type}.{attribute.name}"
                assert key not in found, f"more than one {node.op_type} in the main graph"
                found[key] = attribute.g
    return found


def close(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> bool:
    """Equal up to float rounding (a fold reorders arithmetic): relative 1e-4 of the output's scale."""
    return all(
        np.shape(g) == np.shape(w) and np.allclose(g, w, rtol=1e-4, atol=1e-4 * (float(np.abs(w).max()) or 1.0))
        for g, w in zip(got, want)
    )


def branch_feeds() -> list[dict[str, np.ndarray]]:
    """Two batches of the contract data: the If takes its then branch on the first, its else branch on the second."""
    with np.load(FIXTURES / "contract_calib.npz") as data:
        rows = data["input"]
    return [{"input": rows[rows.sum(axis=1) > 0][:4]}, {"input": rows[rows.sum(axis=1) < 0][:4]}]


def check_subgraphs(spec: PassSpec, plain: Run, branched: Run | OnnxoptError) -> None:
    """On the If / Loop model the pass gives a model that passes the checker and runs down both branches; if it
    kept the plain twin's outputs it keeps these; if it says it handles subgraphs and changed the twin, it
    changed every subgraph. A pass that does not handle subgraphs may refuse the model with a clear error."""
    if isinstance(branched, OnnxoptError):
        assert not spec.handles_subgraphs, (
            f"{spec.name!r} handles subgraphs yet refused the If / Loop model: {branched}"
        )
        return
    twin = FIXTURES / "contract_plain.onnx"
    source = FIXTURES / "contract_subgraphs.onnx"
    then_feeds = branch_feeds()[0]
    exact = close(run_model(plain.output, then_feeds), run_model(twin, then_feeds))
    for inputs in branch_feeds():
        try:
            got = run_model(branched.output, inputs)
        except AssertionError as exc:
            raise AssertionError(f"{spec.name!r} on the If / Loop model: {exc}") from exc
        assert not exact or close(got, run_model(source, inputs)), (
            f"{spec.name!r} keeps the plain twin's outputs but changes the If / Loop model's"
        )
    if not spec.handles_subgraphs:
        return
    twin_changed = _content(onnx.ModelProto.FromString(plain.before).graph) != _content(plain.output.graph)
    before = subgraphs(onnx.ModelProto.FromString(branched.before))
    after = subgraphs(branched.output)
    assert set(after) == set(before), f"{spec.name!r}: the model's subgraphs were {sorted(before)}, now {sorted(after)}"
    if twin_changed:
        untouched = [key for key in before if _content(before[key]) == _content(after[key])]
        assert not untouched, (
            f"{spec.name!r} says it handles subgraphs and rewrote the plain twin, but left {', '.join(untouched)} "
            "as they were"
        )
