"""Mutation fuzzing: broken and odd models through load -> fold -> save -> validate, in process.

Hypothesis mutates the four fixture models two ways: as bytes (flip, overwrite, truncate, delete, splice
in a piece of another fixture) and as graphs (drop a node, rewire an input to another or an undefined value,
change or drop an attribute, change a dtype, give two values one name, change the opset, stack several).
Each mutant goes through the run ``onnxopt.optimize(..., passes=["fold"])`` makes — load, fold, save,
validate with onnxruntime — and the only acceptable outcomes are an :class:`onnxopt.errors.OnnxoptError`
(bad input), a finished run, or a clean gate failure (exit 1). Any other exception is a crash. A run where fold itself
raised, or produced a model the checker or onnxruntime rejects, from an input that passed both, is a fold
bug and fails the test too. The input file must come out byte-identical.

Deterministic in CI (``derandomize``, no example database). The default runs 1000 cases; a longer local
run: ``ONNXOPT_FUZZ_EXAMPLES=20000 python -m pytest tests/host/test_fuzz.py -p no:cacheprovider`` (split 70 / 30
as below), with ``ONNXOPT_FUZZ_SEED=N`` for another reproducible stream of cases.
Hypothesis is the engine; the mutations are written here (no library mutates ONNX graphs).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st
from onnx import TensorProto
from paths import FIXTURES

from onnxopt.errors import EXIT_GATE_FAILED, OnnxoptError
from onnxopt.pipeline import Run
from onnxopt.recipe import build_recipe
from onnxopt.session import Session

MODELS = ["iris_mlp", "digits_cnn", "tiny_transformer", "if_model"]
BYTES = {name: (FIXTURES / f"{name}.onnx").read_bytes() for name in MODELS}

#: Cases in all: 70 % byte mutants, 30 % graph mutants (slower: more of them get as far as onnxruntime).
EXAMPLES = int(os.environ.get("ONNXOPT_FUZZ_EXAMPLES", "1000"))
FUZZ_SEED = int(os.environ.get("ONNXOPT_FUZZ_SEED", "0"))

FUZZ = settings(
    max_examples=max(1, EXAMPLES * 7 // 10),
    derandomize=FUZZ_SEED == 0,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
GRAPH_FUZZ = settings(FUZZ, max_examples=max(1, EXAMPLES - EXAMPLES * 7 // 10))
#: One session for every case: ``onnxopt.optimize`` builds its own each call, and scanning the
#: installed entry points would take most of a refused case's time.
PLUGINS = Session()
RECIPE = build_recipe(passes=["fold"], latency_runs=0)


def _maybe_seeded(test: Callable) -> Callable:
    return seed(FUZZ_SEED)(test) if FUZZ_SEED else test


# --- the run under test ---------------------------------------------------------------------------------------


def run_mutant(data: bytes) -> str:
    """load -> fold -> save -> validate one mutant; return how it ended. Raises on anything unacceptable."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-fuzz-") as folder:
        source, output = Path(folder) / "model.onnx", Path(folder) / "out" / "model.onnx"
        source.write_bytes(data)
        output.parent.mkdir()
        try:
            report = Run(RECIPE, PLUGINS)(source, output)  # what onnxopt.optimize does, less the plugin scan
        except OnnxoptError as exc:
            assert str(exc).strip(), "an error without a message"
            outcome = f"refused ({type(exc).__name__}, exit {exc.exit_code})"
        else:
            step = report.steps[0]
            if report.exit_code not in (0, EXIT_GATE_FAILED):  # the input loaded in onnxruntime, fold broke it
                pytest.fail(f"fold failed on a model onnxruntime accepts: {report.message}")
            assert output.is_file(), "a finished run wrote nothing"
            onnx.checker.check_model(str(output))
            outcome = "gate failed" if report.exit_code else f"ok ({step.status})"
        assert source.read_bytes() == data, "the input file was modified"
        leftovers = sorted(p.name for p in output.parent.iterdir() if not p.name.startswith("model.onnx"))
        assert leftovers == [], f"temporary files left beside the output: {leftovers}"
    return outcome


# --- byte-level mutations -------------------------------------------------------------------------------------


@st.composite
def byte_mutants(draw: st.DrawFn) -> bytes:
    data = bytearray(BYTES[draw(st.sampled_from(MODELS))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "delete", "splice", "duplicate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "splice":  # a piece of another fixture: valid protobuf fields in the wrong place
            other = BYTES[draw(st.sampled_from(MODELS))]
            start = draw(st.integers(0, len(other) - 1))
            data[at:at] = other[start : start + draw(st.integers(1, 256))]
        elif kind == "duplicate" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


@_maybe_seeded
@FUZZ
@given(byte_mutants())
def test_byte_mutants_never_crash(data: bytes) -> None:
    event(run_mutant(data))


# --- graph-level edits ----------------------------------------------------------------------------------------

DTYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32,
          TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.STRING, TensorProto.UNDEFINED,
          99]  # fmt: skip


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """The graph and every subgraph in it, so edits reach If branches too."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                found += _graphs(sub)
    return found


def _value_names(graph: onnx.GraphProto) -> list[str]:
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    return names + [out for node in graph.node for out in node.output if out]


def drop_node(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    if graph.node:
        del graph.node[draw(st.integers(0, len(graph.node) - 1))]


def rewire_input(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    nodes = [n for n in graph.node if n.input]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    index = draw(st.integers(0, len(node.input) - 1))
    node.input[index] = draw(st.sampled_from([*_value_names(graph), "", "undefined_value"]))


def edit_attribute(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    nodes = [n for n in graph.node if n.attribute]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    attr = draw(st.sampled_from(list(node.attribute)))
    action = draw(st.sampled_from(["drop", "int", "float", "ints", "type"]))
    if action == "drop":
        node.attribute.remove(attr)
    elif action == "int":
        attr.i = draw(st.integers(-3, 5))
    elif action == "float":
        attr.f = draw(st.sampled_from([0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf")]))
    elif action == "ints":
        attr.ints[:] = draw(st.lists(st.integers(-4, 4), max_size=4))
    else:
        attr.type = draw(st.sampled_from(list(onnx.AttributeProto.AttributeType.values())))


def change_dtype(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    typed = [*graph.input, *graph.output, *graph.value_info]
    choice = draw(st.sampled_from(["value", "initializer"] if graph.initializer else ["value"]))
    if choice == "value" and typed:
        draw(st.sampled_from(typed)).type.tensor_type.elem_type = draw(st.sampled_from(DTYPES))
    elif graph.initializer:  # the declared type changes, the bytes stay: a size mismatch or a reinterpretation
        draw(st.sampled_from(list(graph.initializer))).data_type = draw(st.sampled_from(DTYPES))


def duplicate_name(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    names = _value_names(graph)
    nodes = [n for n in graph.node if n.output]
    if not nodes or not names:
        return
    node = draw(st.sampled_from(nodes))
    node.output[0] = draw(st.sampled_from(names))


def change_shape(draw: st.DrawFn, graph: onnx.GraphProto) -> None:
    if graph.initializer:
        tensor = draw(st.sampled_from(list(graph.initializer)))
        tensor.dims[:] = draw(st.lists(st.integers(0, 8), max_size=4))


EDITS = [drop_node, rewire_input, edit_attribute, change_dtype, duplicate_name, change_shape]


@st.composite
def graph_mutants(draw: st.DrawFn) -> bytes:
    model = onnx.load_from_string(BYTES[draw(st.sampled_from(MODELS))])
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from([*EDITS, "opset", "ir_version"]))
        if edit == "opset":
            model.opset_import[0].version = draw(st.integers(1, 30))
        elif edit == "ir_version":
            model.ir_version = draw(st.integers(1, 12))
        else:
            edit(draw, draw(st.sampled_from(_graphs(model.graph))))
    return model.SerializeToString()


@_maybe_seeded
@GRAPH_FUZZ
@given(graph_mutants())
def test_graph_mutants_never_crash(data: bytes) -> None:
    event(run_mutant(data))


def test_unmutated_fixtures_pass() -> None:
    """The harness itself: every fixture as it is goes through and is kept."""
    for name in MODELS:
        assert run_mutant(BYTES[name]).startswith("ok"), name
