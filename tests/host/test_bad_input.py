"""The bad-input corpus, through the CLI in a subprocess.

Every case builds its inputs in a folder of its own (small real models, data and recipes; no mocks) and runs
one command. Each must: exit 2; print exactly one non-empty line on stderr, ``onnxopt: error: ...``, naming
the problem; print no traceback; leave every file in its folder byte-identical; and create nothing there —
no output file, no temporary file or folder. The commands' start-up time dominates, so the module fixture
``corpus`` builds every case and runs them all once, in parallel; each case's test checks its own outcome.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from paths import FIXTURES


@dataclass
class Case:
    args: list[str]
    expect: tuple[str, ...]  # substrings the error line must contain
    max_file_bytes: int | None = None  # RLIMIT_FSIZE for the command: a disk that fills up during a write


# --- builders -------------------------------------------------------------------------------------------------


def _dirs(tmp: Path) -> tuple[Path, Path]:
    """``in/`` for inputs, ``out/`` (existing, empty) for the output."""
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    return tmp / "in", tmp / "out"


def _optimize(model: Path, out: Path, *extra: str) -> list[str]:
    return ["optimize", str(model), "-o", str(out), "--pass", "fold", *extra]


def _iris(folder: Path) -> Path:
    return Path(shutil.copy2(FIXTURES / "iris_mlp.onnx", folder / "iris_mlp.onnx"))


def _iris_val(folder: Path) -> Path:
    return Path(shutil.copy2(FIXTURES / "iris_mlp_val.npz", folder / "val.npz"))


def _small_model(nodes: list[onnx.NodeProto], *, opset: int = 13) -> onnx.ModelProto:
    """A graph ``input`` float[batch, 4] -> ``y`` float[batch, 4] around ``nodes``."""
    graph = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _bad_model_case(tmp: Path, model: onnx.ModelProto | bytes, *expect: str) -> Case:
    src, out = _dirs(tmp)
    path = src / "model.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return Case(_optimize(path, out / "model.onnx"), expect)


def _external_model(folder: Path) -> tuple[Path, onnx.ModelProto]:
    """The iris MLP saved with every initializer in ``model.onnx.data``; returns the path and its proto."""
    path = folder / "model.onnx"
    onnx.save_model(
        onnx.load(FIXTURES / "iris_mlp.onnx"),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    assert (folder / "model.onnx.data").stat().st_size > 0
    return path, onnx.load(path, load_external_data=False)


def _set_location(proto: onnx.ModelProto, location: str) -> None:
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location


def missing_file(tmp: Path) -> Case:
    _, out = _dirs(tmp)
    return Case(_optimize(tmp / "in" / "nope.onnx", out / "model.onnx"), ("nope.onnx", "no such file"))


def empty_file(tmp: Path) -> Case:
    return _bad_model_case(tmp, b"", "empty file")


def random_bytes(tmp: Path) -> Case:
    return _bad_model_case(tmp, np.random.default_rng(0).bytes(2000), "not an ONNX model")


def truncated_model(tmp: Path) -> Case:
    data = (FIXTURES / "digits_cnn.onnx").read_bytes()
    return _bad_model_case(tmp, data[: len(data) // 2], "truncated")


def tensor_proto(tmp: Path) -> Case:
    tensor = helper.make_tensor("t", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    return _bad_model_case(tmp, tensor.SerializeToString(), "not an ONNX model")


def graph_proto(tmp: Path) -> Case:
    graph = _small_model([helper.make_node("Relu", ["input"], ["y"])]).graph
    return _bad_model_case(tmp, graph.SerializeToString(), "not an ONNX model")


def cycle(tmp: Path) -> Case:
    nodes = [
        helper.make_node("Relu", ["b"], ["a"]),
        helper.make_node("Add", ["input", "a"], ["b"]),
        helper.make_node("Identity", ["a"], ["y"]),
    ]
    return _bad_model_case(tmp, _small_model(nodes), "rejected by the ONNX checker", "topologically sorted")


def undefined_value(tmp: Path) -> Case:
    nodes = [helper.make_node("Add", ["input", "nowhere"], ["y"])]
    return _bad_model_case(tmp, _small_model(nodes), "rejected by the ONNX checker", "'nowhere'")


def duplicate_names(tmp: Path) -> Case:
    nodes = [helper.make_node("Relu", ["input"], ["y"]), helper.make_node("Neg", ["input"], ["y"])]
    return _bad_model_case(tmp, _small_model(nodes), "rejected by the ONNX checker", "'y'", "single static assignment")


def name_not_utf8(tmp: Path) -> Case:
    """A corrupted byte in a node name: onnx's checker and onnxruntime accept it, onnx_ir cannot write it."""
    data = (FIXTURES / "iris_mlp.onnx").read_bytes().replace(b"hidden_Relu", b"\xf0idden_Relu")
    return _bad_model_case(tmp, data, "model.graph.node[3].name", "not valid UTF-8")


def unknown_attribute(tmp: Path) -> Case:
    """LayerNormalization with ``zxis`` for ``axis``: onnx's checker (a function op) and onnxruntime let it by."""
    model = onnx.load(FIXTURES / "tiny_transformer.onnx")
    node = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    next(a for a in node.attribute if a.name == "axis").name = "zxis"
    return _bad_model_case(tmp, model, "LayerNormalization has no attribute 'zxis' in opset 17")


def unknown_op(tmp: Path) -> Case:
    nodes = [helper.make_node("FrobnicateXYZ", ["input"], ["y"])]
    return _bad_model_case(tmp, _small_model(nodes), "rejected by the ONNX checker", "FrobnicateXYZ")


def opset_99_optimize(tmp: Path) -> Case:
    # onnx's checker accepts opset 99 (Relu exists at every later version); onnxruntime refuses to load it.
    nodes = [helper.make_node("Relu", ["input"], ["y"])]
    return _bad_model_case(tmp, _small_model(nodes, opset=99), "onnxruntime cannot load it", "Opset 99")


def opset_99_validate(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    path = src / "model.onnx"
    path.write_bytes(_small_model([helper.make_node("Relu", ["input"], ["y"])], opset=99).SerializeToString())
    return Case(
        ["validate", str(path), str(path), "--data", str(_iris_val(src))], ("onnxruntime cannot load it", "Opset 99")
    )


def external_data_missing(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    path, _ = _external_model(src)
    (src / "model.onnx.data").unlink()
    return Case(_optimize(path, out / "model.onnx"), ("'model.onnx.data'", "missing"))


def external_data_short(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    path, _ = _external_model(src)
    data = src / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    return Case(_optimize(path, out / "model.onnx"), ("'model.onnx.data'", "shorter than declared"))


def external_data_absolute(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    path, proto = _external_model(src)
    _set_location(proto, str((src / "model.onnx.data").resolve()))  # the file exists: only the form is wrong
    path.write_bytes(proto.SerializeToString())
    return Case(_optimize(path, out / "model.onnx"), ("external data location", "must be a relative path"))


def external_data_dotdot(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    path, proto = _external_model(src)
    inner = src / "sub"
    inner.mkdir()
    _set_location(proto, "../model.onnx.data")  # the file exists one folder up: only escaping is wrong
    (inner / "model.onnx").write_bytes(proto.SerializeToString())
    return Case(
        _optimize(inner / "model.onnx", out / "model.onnx"), ("'../model.onnx.data'", "outside the model's folder")
    )


class _Tripwire:
    """Unpickling this would create a file next to the data: proof that the pickle was never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_data(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    data = src / "evil.npz"
    np.savez(data, input=np.array([_Tripwire(src / "PWNED")], dtype=object))
    return Case(_optimize(_iris(src), out / "model.onnx", "--data", str(data)), ("evil.npz", "pickled objects"))


def _data_case(tmp: Path, arrays: dict[str, np.ndarray], *expect: str) -> Case:
    src, out = _dirs(tmp)
    data = src / "data.npz"
    np.savez(data, **arrays)
    return Case(_optimize(_iris(src), out / "model.onnx", "--data", str(data)), expect)


def data_wrong_input_name(tmp: Path) -> Case:
    return _data_case(
        tmp, {"inputs": np.zeros((8, 4), np.float32)}, "missing input(s) 'input'", "unknown key(s) 'inputs'"
    )


def data_wrong_dtype(tmp: Path) -> Case:
    return _data_case(tmp, {"input": np.zeros((8, 4), np.float64)}, "input 'input'", "dtype float64")


def data_wrong_shape(tmp: Path) -> Case:
    return _data_case(tmp, {"input": np.zeros((8, 5), np.float32)}, "input 'input'", "does not fit the model input")


def unknown_pass(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    return Case(
        ["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--pass", "nosuchpass"], ("unknown pass 'nosuchpass'",)
    )


def unknown_pass_option(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    args = ["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--pass", "fold:colour=red"]
    return Case(args, ("pass 'fold' has no option 'colour'",))


def option_wrong_type(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    args = ["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--pass", "fold:deduplicate=maybe"]
    return Case(args, ("deduplicate='maybe'", "expected true or false"))


def output_is_input(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    model = _iris(src)
    return Case(_optimize(model, model), ("would overwrite the input", "--in-place"))


def output_folder_missing(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    return Case(_optimize(_iris(src), tmp / "out" / "nope" / "m.onnx"), ("output folder", "does not exist"))


def output_parent_is_file(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    (out / "afile").write_text("not a folder\n")
    return Case(_optimize(_iris(src), out / "afile" / "m.onnx"), ("output folder", "afile"))


def _make_read_only(folder: Path) -> None:
    """Mode 0500, or for root (who ignores mode bits) the immutable attribute, which stops root too."""
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):
        folder.chmod(0o700)
        if (
            shutil.which("chattr") is None
            or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode
        ):
            pytest.skip("running as root without chattr +i: nothing makes a folder read-only")


def _make_writable(folder: Path) -> None:
    if shutil.which("chattr") is not None:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o700)


def output_folder_not_writable(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    _make_read_only(out)
    return Case(_optimize(_iris(src), out / "m.onnx"), ("output folder", "is not writable"))


def write_fails_midway(tmp: Path) -> Case:
    """The disk fills up after 512 bytes of the new model; the previous output must survive whole.

    A real failing write (RLIMIT_FSIZE, so ``write`` returns EFBIG), not a mock. The input is the already
    folded iris model (976 bytes), so fold leaves it unchanged and the final save is the only write.
    """
    src, out = _dirs(tmp)
    from onnxopt import api, model_io

    folded = model_io.save(api.apply_passes(model_io.load(FIXTURES / "iris_mlp.onnx"), ["fold"]), src / "model.onnx")
    assert folded.stat().st_size > 512
    shutil.copy2(FIXTURES / "digits_cnn.onnx", out / "model.onnx")  # the previous output
    return Case(
        _optimize(folded, out / "model.onnx"),
        ("model.onnx", "write failed", "File too large", "nothing was replaced"),
        512,
    )


def _recipe_case(tmp: Path, text: str, *expect: str) -> Case:
    src, out = _dirs(tmp)
    recipe = src / "recipe.toml"
    recipe.write_text(text)
    return Case(["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--recipe", str(recipe)], expect)


def recipe_bad_toml(tmp: Path) -> Case:
    return _recipe_case(tmp, '[[passes]]\nname = "fold\n', "recipe.toml", "not valid TOML")


def recipe_unknown_key(tmp: Path) -> Case:
    return _recipe_case(tmp, 'colour = "red"\n[[passes]]\nname = "fold"\n', "recipe.toml", "unknown key(s) colour")


def plugin_missing(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    args = _optimize(_iris(src), out / "m.onnx", "-p", "no_such_onnxopt_plugin_xyz")
    return Case(args, ("-p no_such_onnxopt_plugin_xyz", "no such plugin or module"))


def malformed_shape(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    args = _optimize(_iris(src), out / "m.onnx", "--data", "synthetic:4", "--shape", "input=1xfour")
    return Case(args, ("--shape 'input=1xfour'", "integers"))


def validate_missing_candidate(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    args = ["validate", str(_iris(src)), str(src / "nope.onnx"), "--data", str(_iris_val(src))]
    return Case(args, ("nope.onnx", "no such file"))


def validate_truncated_reference(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    data = (FIXTURES / "digits_cnn.onnx").read_bytes()
    (src / "ref.onnx").write_bytes(data[: len(data) // 2])
    args = ["validate", str(src / "ref.onnx"), str(_iris(src)), "--data", str(_iris_val(src))]
    return Case(args, ("ref.onnx", "truncated"))


def validate_wrong_dtype(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    model = _iris(src)
    np.savez(src / "data.npz", input=np.zeros((8, 4), np.float64))
    return Case(["validate", str(model), str(model), "--data", str(src / "data.npz")], ("dtype float64",))


def inspect_random_bytes(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    (src / "model.onnx").write_bytes(np.random.default_rng(1).bytes(500))
    return Case(["inspect", str(src / "model.onnx")], ("not an ONNX model",))


def _nul_location_model(src: Path) -> Path:
    """The external-data iris MLP whose location reads ``model.onnx.data<NUL>x`` (the data file itself exists)."""
    path, proto = _external_model(src)
    _set_location(proto, "model.onnx.data\0x")
    path.write_bytes(proto.SerializeToString())
    return path


def external_data_nul_inspect(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    return Case(["inspect", str(_nul_location_model(src))], ("external data location", "NUL byte"))


def external_data_nul_validate(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    path = _nul_location_model(src)
    return Case(
        ["validate", str(path), str(path), "--data", str(_iris_val(src))], ("external data location", "NUL byte")
    )


def recipe_passes_not_a_list(tmp: Path) -> Case:
    return _recipe_case(tmp, "passes = 5\n", "recipe.toml", "passes must be a list")


def recipe_negative_seed(tmp: Path) -> Case:
    return _recipe_case(tmp, 'seed = -1\n[[passes]]\nname = "fold"\n', "recipe.toml", "seed must be at least 0", "-1")


def cli_negative_seed(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    return Case(_optimize(_iris(src), out / "m.onnx", "--seed", "-1"), ("seed must be at least 0",))


def recipe_zero_batch_size(tmp: Path) -> Case:
    return _recipe_case(
        tmp, 'batch_size = 0\n[[passes]]\nname = "fold"\n', "recipe.toml", "batch_size must be at least 1"
    )


def cli_negative_batch_size(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    return Case(_optimize(_iris(src), out / "m.onnx", "--batch-size", "-1"), ("batch_size must be at least 1", "-1"))


def recipe_negative_threads(tmp: Path) -> Case:
    return _recipe_case(tmp, 'threads = -1\n[[passes]]\nname = "fold"\n', "recipe.toml", "threads must be at least 0")


def validate_negative_latency_runs(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    model = _iris(src)
    args = ["validate", str(model), str(model), "--data", str(_iris_val(src)), "--latency-runs", "-5"]
    return Case(args, ("latency_runs must be at least 0", "-5"))


def recipe_negative_latency_runs(tmp: Path) -> Case:
    return _recipe_case(
        tmp, 'latency_runs = -5\n[[passes]]\nname = "fold"\n', "recipe.toml", "latency_runs must be at least 0"
    )


def option_infinite(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    args = ["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--pass", "fold:max_growth_mib=inf"]
    return Case(args, ("max_growth_mib='inf'", "expected a finite number"))


def recipe_option_nan(tmp: Path) -> Case:
    text = '[[passes]]\nname = "fold"\nmax_growth_mib = nan\n'
    return _recipe_case(tmp, text, "max_growth_mib=nan", "expected a finite number")


def gate_nan(tmp: Path) -> Case:
    src, _ = _dirs(tmp)
    model = _iris(src)
    return Case(
        ["validate", str(model), str(model), "--data", str(_iris_val(src)), "--atol", "nan"], ("gate atol", "finite")
    )


def recipe_gate_out_of_range(tmp: Path) -> Case:
    text = '[gates]\nmin_cosine = 1.5\n[[passes]]\nname = "fold"\n'
    return _recipe_case(tmp, text, "gate min_cosine must be between -1 and 1", "1.5")


def shape_wrong_rank(tmp: Path) -> Case:
    """``--shape input=5`` for the digits CNN's rank-4 input: a usage error before any pass runs."""
    src, out = _dirs(tmp)
    model = Path(shutil.copy2(FIXTURES / "digits_cnn.onnx", src / "digits_cnn.onnx"))
    return Case(_optimize(model, out / "m.onnx", "--shape", "input=5"), ("--shape input=5", "does not fit"))


def output_is_fifo(tmp: Path) -> Case:
    """``-o`` naming a FIFO (as a device would be, e.g. /dev/null): replacing it with a file is refused."""
    src, out = _dirs(tmp)
    os.mkfifo(out / "pipe")
    return Case(_optimize(_iris(src), out / "pipe"), ("pipe", "not a regular file"))


def output_data_file_is_fifo(tmp: Path) -> Case:
    """``OUT.data`` a FIFO: the save that would replace it is refused (the model would need external data)."""
    src, out = _dirs(tmp)
    path, _ = _external_model(src)
    os.mkfifo(out / "m.onnx.data")
    return Case(_optimize(path, out / "m.onnx"), ("m.onnx.data", "not a regular file"))


def _nested_if_bytes(depth: int) -> bytes:
    """A model ``depth`` Ifs deep, each then-branch holding the next, written as raw protobuf fields.

    onnx.helper cannot build it: copying a message that deep fails in protobuf itself.
    """

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field
        key, size = bytearray(), bytearray()
        for out, value in ((key, number << 3 | 2), (size, len(payload))):
            while value > 0x7F:
                out.append(value & 0x7F | 0x80)
                value >>= 7
            out.append(value)
        return bytes(key + size) + payload

    def graph(name: str, output: str, nodes: bytes) -> bytes:
        info = helper.make_tensor_value_info(output, TensorProto.FLOAT, [4])
        return nodes + field(2, name.encode()) + field(12, info.SerializeToString())

    body = graph("g0", "y0", field(1, helper.make_node("Identity", ["input"], ["y0"]).SerializeToString()))
    for level in range(1, depth + 1):
        other = helper.make_graph([helper.make_node("Identity", ["input"], [f"e{level}"])], f"e{level}", [],
                                  [helper.make_tensor_value_info(f"e{level}", TensorProto.FLOAT, [4])])  # fmt: skip
        node = helper.make_node("If", ["cond"], [f"y{level}"], else_branch=other)
        then = onnx.AttributeProto(name="then_branch", type=onnx.AttributeProto.GRAPH).SerializeToString() + field(
            6, body
        )
        body = graph(f"g{level}", f"y{level}", field(1, node.SerializeToString() + field(5, then)))
    model = helper.make_model(helper.make_graph([], "main", [], []), opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString() + field(7, body)


def nested_too_deep(tmp: Path) -> Case:
    return _bad_model_case(tmp, _nested_if_bytes(200), "nested too deep")


def npz_member_short(tmp: Path) -> Case:
    """An .npz whose array's header declares more data than the member holds: unreadable, not pickled."""
    src, out = _dirs(tmp)
    full = io.BytesIO()
    np.save(full, np.zeros((30, 4), np.float32))
    with zipfile.ZipFile(src / "data.npz", "w") as archive:
        archive.writestr("input.npy", full.getvalue()[:-100])
    return Case(_optimize(_iris(src), out / "m.onnx", "--data", str(src / "data.npz")), ("data.npz", "cannot read"))


def data_fifo(tmp: Path) -> Case:
    """``--data`` naming a FIFO (its read would wait for a writer forever)."""
    src, out = _dirs(tmp)
    os.mkfifo(src / "data.npz")
    return Case(
        _optimize(_iris(src), out / "m.onnx", "--data", str(src / "data.npz")), ("data.npz", "not a regular file")
    )


def data_folder_with_fifo(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    (src / "data").mkdir()
    os.mkfifo(src / "data" / "input.npy")
    return Case(_optimize(_iris(src), out / "m.onnx", "--data", str(src / "data")), ("input.npy", "not a regular file"))


def recipe_fifo(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    os.mkfifo(src / "recipe.toml")
    return Case(["optimize", str(_iris(src)), "-o", str(out / "m.onnx"), "--recipe", str(src / "recipe.toml")],
                ("recipe.toml", "not a regular file"))  # fmt: skip


def npy_short(tmp: Path) -> Case:
    src, out = _dirs(tmp)
    (src / "data").mkdir()
    np.save(src / "data" / "input.npy", np.zeros((30, 4), np.float32))
    (src / "data" / "input.npy").write_bytes((src / "data" / "input.npy").read_bytes()[:-100])
    return Case(_optimize(_iris(src), out / "m.onnx", "--data", str(src / "data")), ("input.npy", "cannot read"))


CASES: list[Callable[[Path], Case]] = [
    missing_file,
    empty_file,
    random_bytes,
    truncated_model,
    tensor_proto,
    graph_proto,
    cycle,
    undefined_value,
    duplicate_names,
    name_not_utf8,
    unknown_attribute,
    unknown_op,
    opset_99_optimize,
    opset_99_validate,
    external_data_missing,
    external_data_short,
    external_data_absolute,
    external_data_dotdot,
    pickled_data,
    data_wrong_input_name,
    data_wrong_dtype,
    data_wrong_shape,
    unknown_pass,
    unknown_pass_option,
    option_wrong_type,
    output_is_input,
    output_folder_missing,
    output_parent_is_file,
    output_folder_not_writable,
    write_fails_midway,
    recipe_bad_toml,
    recipe_unknown_key,
    plugin_missing,
    malformed_shape,
    validate_missing_candidate,
    validate_truncated_reference,
    validate_wrong_dtype,
    inspect_random_bytes,
    external_data_nul_inspect,
    external_data_nul_validate,
    recipe_passes_not_a_list,
    recipe_negative_seed,
    cli_negative_seed,
    recipe_zero_batch_size,
    cli_negative_batch_size,
    recipe_negative_threads,
    validate_negative_latency_runs,
    recipe_negative_latency_runs,
    option_infinite,
    recipe_option_nan,
    gate_nan,
    recipe_gate_out_of_range,
    shape_wrong_rank,
    output_is_fifo,
    output_data_file_is_fifo,
    nested_too_deep,
    npz_member_short,
    npy_short,
    data_fifo,
    data_folder_with_fifo,
    recipe_fifo,
]


def _case_id(build: Callable[[Path], Case]) -> str:
    return build.__name__.replace("_", "-")


def _snapshot(root: Path) -> dict[str, str | None]:
    """Every file and folder under ``root``: its SHA-256 (files) or None (folders)."""
    tree: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            tree[rel] = None
        elif path.is_file():
            tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:  # a FIFO (reading it would block): its kind must not change
            tree[rel] = f"mode {stat.S_IFMT(path.stat().st_mode):o}"
    return tree


@dataclass
class Outcome:
    case: Case | None = None
    error: BaseException | None = None  # raised while building the case (a skip, or a broken builder)
    result: subprocess.CompletedProcess[str] | None = None
    before: dict[str, str | None] | None = None
    after: dict[str, str | None] | None = None


@dataclass
class Corpus:
    outcomes: dict[str, Outcome]  # by case id
    tmp_leftovers: list[str]  # what the commands left in their shared TMPDIR


def _run_case(run_cli, case: Case, cwd: Path) -> subprocess.CompletedProcess[str]:
    if case.max_file_bytes is None:
        return run_cli(*case.args, cwd=cwd)

    def limit_file_size() -> None:  # Python ignores SIGXFSZ, so an oversized write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.max_file_bytes, case.max_file_bytes))

    return subprocess.run(
        [sys.executable, "-m", "onnxopt.cli", *case.args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limit_file_size,
    )  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, run_cli) -> Corpus:
    """Every case built in its own folder and run once, in parallel (each command is mostly start-up time)."""
    prepared: dict[str, tuple[Path, Outcome]] = {}
    for build in CASES:
        tmp = tmp_path_factory.mktemp(build.__name__)
        outcome = Outcome()
        try:
            outcome.case = build(tmp)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the case's own test
            outcome.error = exc
        else:
            outcome.before = _snapshot(tmp)
        prepared[_case_id(build)] = (tmp, outcome)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=workers) as pool:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))  # the commands' own temporary files
        try:
            futures = {
                name: pool.submit(_run_case, run_cli, outcome.case, tmp)
                for name, (tmp, outcome) in prepared.items()
                if outcome.case is not None
            }
            for name, future in futures.items():
                prepared[name][1].result = future.result()
        finally:
            for tmp, _ in prepared.values():
                for folder in (tmp / "in", tmp / "out"):
                    if folder.is_dir():
                        _make_writable(folder)  # undo the not-writable case before looking (and cleaning up)
        tmpdir = Path(os.environ["TMPDIR"])
    for tmp, outcome in prepared.values():
        if outcome.case is not None:
            outcome.after = _snapshot(tmp)
    return Corpus(
        {name: outcome for name, (_, outcome) in prepared.items()},
        # onnxruntime itself keeps a telemetry session file, ".ses", in the temporary folder: not ours
        sorted(p.name for p in tmpdir.iterdir() if p.name != ".ses"),
    )


def test_no_temporary_files_left_behind(corpus: Corpus) -> None:
    """All the bad-input commands ran with one TMPDIR; none left anything in it."""
    assert corpus.tmp_leftovers == []


@pytest.mark.parametrize("build", CASES, ids=_case_id)
def test_bad_input(build: Callable[[Path], Case], corpus: Corpus) -> None:
    outcome = corpus.outcomes[_case_id(build)]
    if outcome.error is not None:
        raise outcome.error
    result = outcome.result

    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("onnxopt: error:"), line
    for text in outcome.case.expect:
        assert text in line, f"{text!r} not in {line!r}"
    assert result.returncode == 2, (result.returncode, line)
    assert outcome.after == outcome.before, "inputs changed, or an output or temporary file was left behind"


def test_sigterm_leaves_no_temporary_folder(tmp_path: Path) -> None:
    """SIGTERM while the written model is being validated (its staging folder beside the output, the run's
    temporary folder in TMPDIR): exit 143, one line, and neither folder left behind."""
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmpdir.mkdir()
    args = ["optimize", str(FIXTURES / "digits_cnn.onnx"), "-o", str(out / "m.onnx"), "--pass", "fold",
            "--no-validate-each-pass", "--data", "synthetic:300000", "--latency-runs", "0"]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "onnxopt.cli", *args], env={**os.environ, "TMPDIR": str(tmpdir)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(out.iterdir()):  # the staged model appears once the passes are done
            assert process.poll() is None, f"ended before its output was staged: {process.communicate()}"
            assert time.monotonic() < deadline, "no staged output after 120 s"
            time.sleep(0.01)
        assert any(p.name.startswith("onnxopt-") for p in tmpdir.iterdir())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    assert stderr.splitlines() == ["onnxopt: terminated"]
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmpdir.iterdir() if p.name != ".ses") == []


@pytest.mark.parametrize(
    ("setting", "bad", "least"), [("batch_size", 0, 1), ("seed", -1, 0), ("threads", -1, 0), ("latency_runs", -5, 0)]
)
def test_settings_out_of_range_are_refused_however_the_recipe_is_built(setting: str, bad: int, least: int) -> None:
    """The Python API, a recipe mapping and a Recipe built directly share one check; its least value passes."""
    from onnxopt.errors import UsageError
    from onnxopt.recipe import Recipe, build_recipe, recipe_from_mapping

    for build in (lambda v: build_recipe(**{setting: v}), lambda v: recipe_from_mapping({setting: v}),
                  lambda v: Recipe(**{setting: v})):  # fmt: skip
        with pytest.raises(UsageError, match=f"{setting} must be at least {least}"):
            build(bad)
        assert getattr(build(least), setting) == least


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", float("inf")])
def test_float_pass_options_must_be_finite(text: str | float) -> None:
    from onnxopt.passes import coerce

    with pytest.raises(ValueError, match="finite"):
        coerce(text, float)
    assert coerce("1e308", float) == 1e308 and coerce("-0.5", float | None) == -0.5


@pytest.mark.parametrize(
    ("gate", "good", "bad"),
    [("atol", 0.0, -1e-9), ("max_size_ratio", 1e6, float("inf")), ("min_cosine", -1.0, -1.01),
     ("min_cosine", 1.0, 1.01), ("min_top1", 1.0, float("nan")), ("max_accuracy_drop", 0.0, -0.01)],
)  # fmt: skip
def test_gates_out_of_range_are_refused(gate: str, good: float, bad: float) -> None:
    from onnxopt.errors import UsageError
    from onnxopt.gates import Gates

    assert getattr(Gates.from_mapping({gate: good}), gate) == good
    with pytest.raises(UsageError, match=f"gate {gate} must be"):
        Gates.from_mapping({gate: bad})
