"""onnxopt.model_io: lazy loading, self-contained and external-data saves, atomic saves, sizes, safe locations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt
from onnxopt import model_io
from onnxopt.errors import ModelError

FIXTURE_MODELS = ["iris_mlp", "digits_cnn", "tiny_transformer", "if_model"]


def _save_external(source: Path, path: Path) -> Path:
    """Save a fixture with every initializer in ``<name>.data`` (onnx's own writer, not the code under test)."""
    onnx.save_model(
        onnx.load(source),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    """Initializer arrays of a model file as onnx reads it (external data included)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _external_tensor_names(path: Path) -> set[str]:
    proto = onnx.load(path, load_external_data=False)
    return {t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}


def _run(path: Path, feed: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in folder.iterdir()}


# --- load -----------------------------------------------------------------------------------------------------


def test_load_keeps_external_tensors_lazy(tmp_path: Path, fixtures_dir: Path) -> None:
    # tmp_path is not the current directory: external data must resolve against the model's folder
    path = _save_external(fixtures_dir / "digits_cnn.onnx", tmp_path / "model.onnx")
    expected = _initializers(fixtures_dir / "digits_cnn.onnx")

    model = model_io.load(path)

    initializers = model.graph.initializers
    assert set(initializers) == set(expected)
    for name, value in initializers.items():
        assert isinstance(value.const_value, ir.ExternalTensor), name
        np.testing.assert_array_equal(value.const_value.numpy(), expected[name], err_msg=name)

    # Lazy: the bytes are read from disk when asked for, not at load. Zero the file after loading and a
    # fresh load's tensors read zeros where a copy taken at load would still hold the weights.
    model = model_io.load(path)
    data = tmp_path / "model.onnx.data"
    data.write_bytes(bytes(data.stat().st_size))
    weight = model.graph.initializers["conv2.weight"].const_value
    assert not weight.numpy().any()


def test_load_self_contained_values(fixtures_dir: Path) -> None:
    model = model_io.load(fixtures_dir / "iris_mlp.onnx")
    expected = _initializers(fixtures_dir / "iris_mlp.onnx")
    got = {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert [v.name for v in model.graph.inputs] == ["input"]
    assert [v.name for v in model.graph.outputs] == ["probabilities"]


# --- save -----------------------------------------------------------------------------------------------------


def test_save_small_model_is_self_contained(tmp_path: Path, fixtures_dir: Path) -> None:
    out = model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), tmp_path / "out.onnx")
    assert out == (tmp_path / "out.onnx").absolute()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    assert _external_tensor_names(out) == set()
    onnx.checker.check_model(str(out))


def test_save_external_data_when_asked(tmp_path: Path, fixtures_dir: Path) -> None:
    out = model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), tmp_path / "out.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    # tensors of at least EXTERNAL_TENSOR_MIN_BYTES go to the data file, the small ones stay inline
    assert _external_tensor_names(out) == {"conv2.weight", "fc.weight"}
    onnx.checker.check_model(str(out))
    expected = _initializers(fixtures_dir / "digits_cnn.onnx")
    got = _initializers(out)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_save_keeps_external_data_of_an_external_input(tmp_path: Path, fixtures_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    source = _save_external(fixtures_dir / "digits_cnn.onnx", tmp_path / "in" / "model.onnx")
    out = model_io.save(model_io.load(source), tmp_path / "out.onnx")  # external_data=None: follow the input
    assert (tmp_path / "out.onnx.data").is_file()
    assert _external_tensor_names(out)
    onnx.checker.check_model(str(out))


@pytest.mark.parametrize("external_data", [False, True], ids=["self-contained", "external-data"])
@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_saved_model_gives_identical_outputs(
    tmp_path: Path, fixtures_dir: Path, name: str, external_data: bool
) -> None:
    original = fixtures_dir / f"{name}.onnx"
    out = model_io.save(model_io.load(original), tmp_path / "out.onnx", external_data=external_data)
    feed = np.load(fixtures_dir / f"{name}_val.npz")["input"]
    for before, after in zip(_run(original, feed), _run(out, feed), strict=True):
        np.testing.assert_array_equal(after, before)


def test_save_replaces_an_existing_output(tmp_path: Path, fixtures_dir: Path) -> None:
    out = tmp_path / "out.onnx"
    model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), out, external_data=True)
    model_io.save(model_io.load(fixtures_dir / "tiny_transformer.onnx"), out, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnx.data"]
    expected = _initializers(fixtures_dir / "tiny_transformer.onnx")
    got = _initializers(out)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_self_contained_save_removes_the_data_file_the_replaced_model_used(tmp_path: Path, fixtures_dir: Path) -> None:
    out = tmp_path / "out.onnx"
    model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), out, external_data=True)
    model_io.save(model_io.load(fixtures_dir / "tiny_transformer.onnx"), out, external_data=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    feed = np.load(fixtures_dir / "tiny_transformer_val.npz")["input"]
    np.testing.assert_array_equal(_run(out, feed)[0], _run(fixtures_dir / "tiny_transformer.onnx", feed)[0])


@pytest.mark.parametrize("previous", ["self-contained model", "unreadable file", "none"])
def test_self_contained_save_leaves_a_data_file_the_replaced_model_did_not_use(
    tmp_path: Path, fixtures_dir: Path, previous: str
) -> None:
    """``out.onnx.data`` beside a model that does not refer to it (or beside no model) may be someone else's."""
    out, data = tmp_path / "out.onnx", tmp_path / "out.onnx.data"
    if previous == "self-contained model":
        model_io.save(model_io.load(fixtures_dir / "iris_mlp.onnx"), out)
    elif previous == "unreadable file":
        out.write_bytes(b"not a model")
    data.write_bytes(b"a user's file")
    model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), out, external_data=False)
    assert data.read_bytes() == b"a user's file"


@pytest.mark.parametrize("name", ["out.onnx", "out.onnx.data"])
def test_save_refuses_to_replace_a_fifo(tmp_path: Path, fixtures_dir: Path, name: str) -> None:
    """A FIFO (or a device: /dev/null as root) at the output or its data file stays what it is."""
    os.mkfifo(tmp_path / name)
    with pytest.raises(ModelError, match="not a regular file"):
        model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), tmp_path / "out.onnx", external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (tmp_path / name).is_fifo()


def test_save_through_a_symlink_to_a_regular_file(tmp_path: Path, fixtures_dir: Path) -> None:
    """The check follows a link: one to a regular file is a writable output (the rename replaces the link)."""
    (tmp_path / "target.onnx").write_bytes(b"old")
    (tmp_path / "out.onnx").symlink_to(tmp_path / "target.onnx")
    model_io.save(model_io.load(fixtures_dir / "iris_mlp.onnx"), tmp_path / "out.onnx")
    onnx.checker.check_model(str(tmp_path / "out.onnx"))


# --- atomic save ----------------------------------------------------------------------------------------------


@pytest.fixture
def previous_output(tmp_path: Path, fixtures_dir: Path) -> Path:
    """``out/model.onnx`` + ``model.onnx.data`` written by an earlier, successful save."""
    folder = tmp_path / "out"
    folder.mkdir()
    return model_io.save(model_io.load(fixtures_dir / "digits_cnn.onnx"), folder / "model.onnx", external_data=True)


def test_save_failing_midway_leaves_previous_output(previous_output: Path, fixtures_dir: Path) -> None:
    """A disk that fills up halfway: a real failing write (RLIMIT_FSIZE: ``write`` returns EFBIG, as Python
    ignores SIGXFSZ), lowered for this save only, not a mock of onnx_ir's writer."""
    import resource

    folder = previous_output.parent
    before = _listing(folder)
    assert sorted(before) == ["model.onnx", "model.onnx.data"]
    model = model_io.load(fixtures_dir / "tiny_transformer.onnx")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # tiny_transformer's weights are ~13 kB
    try:
        with pytest.raises(ModelError, match="File too large"):
            model_io.save(model, previous_output, external_data=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert _listing(folder) == before  # old model and data intact, no temp folder left
    model_io.save(model, previous_output, external_data=True)  # and the same save succeeds with room to write
    assert _listing(folder) != before


def test_save_failing_rename_leaves_previous_output(previous_output: Path, fixtures_dir: Path, monkeypatch) -> None:
    """The data file is renamed into place, then the model's rename fails: the old pair must survive."""
    folder = previous_output.parent
    before = _listing(folder)
    real_replace = os.replace
    calls = []

    def replace(src, dst, **kwargs):
        calls.append(Path(dst).name)
        if Path(dst) == previous_output:
            raise OSError(5, "Input/output error")
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(model_io.os, "replace", replace)
    model = model_io.load(fixtures_dir / "tiny_transformer.onnx")
    with pytest.raises(ModelError, match="Input/output error"):
        model_io.save(model, previous_output, external_data=True)

    assert "model.onnx.data" in calls and "model.onnx" in calls
    assert _listing(folder) == before
    np.testing.assert_array_equal(  # and the old model still reads its own weights
        _initializers(previous_output)["fc.weight"], _initializers(fixtures_dir / "digits_cnn.onnx")["fc.weight"]
    )


# --- sizes and external data locations ------------------------------------------------------------------------


def test_file_size_counts_external_data(tmp_path: Path, fixtures_dir: Path) -> None:
    path = _save_external(fixtures_dir / "digits_cnn.onnx", tmp_path / "model.onnx")
    data = tmp_path / "model.onnx.data"
    assert data.stat().st_size > path.stat().st_size
    assert model_io.file_size(path) == path.stat().st_size + data.stat().st_size
    assert model_io.file_size(fixtures_dir / "iris_mlp.onnx") == (fixtures_dir / "iris_mlp.onnx").stat().st_size


def _with_location(tmp_path: Path, fixtures_dir: Path, location: str) -> onnx.ModelProto:
    proto = onnx.load(_save_external(fixtures_dir / "iris_mlp.onnx", tmp_path / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return proto


def test_external_data_files_accepts_a_file_inside_the_folder(tmp_path: Path, fixtures_dir: Path) -> None:
    proto = _with_location(tmp_path, fixtures_dir, "model.onnx.data")
    assert model_io.external_data_files(proto, tmp_path) == {(tmp_path / "model.onnx.data").resolve()}


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "must be a relative path"),
        ("ABSOLUTE", "must be a relative path"),
        ("../model.onnx.data", "outside the model's folder"),
        ("sub/../../model.onnx.data", "outside the model's folder"),
        ("", "must be a relative path"),
    ],
    ids=["absolute", "absolute-existing-file", "dotdot", "dotdot-nested", "empty"],
)
def test_external_data_files_rejects_locations_outside(
    tmp_path: Path, fixtures_dir: Path, location: str, message: str
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    if location == "ABSOLUTE":
        location = str((folder / "model.onnx.data").resolve())
    proto = _with_location(folder, fixtures_dir, location)
    with pytest.raises(ModelError, match=message):
        model_io.external_data_files(proto, folder)


# --- concurrency ----------------------------------------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import sys
    from onnxopt import model_io

    source, target = sys.argv[1], sys.argv[2]
    for line in sys.stdin:  # one save per "go" line, answered with "done"
        model_io.save(model_io.load(source), target, external_data=True)
        print("done", flush=True)
    """
)


def test_concurrent_saves_leave_one_complete_model(tmp_path: Path, fixtures_dir: Path) -> None:
    """Two processes save different models to the same path at once; every round leaves one whole model."""
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    sources = {name: fixtures_dir / f"{name}.onnx" for name in ("digits_cnn", "tiny_transformer")}
    expected = {name: _initializers(path) for name, path in sources.items()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path), str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for path in sources.values()
    ]
    try:
        for _ in range(20):  # a naive write in place fails about one round in four
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for proc in procs:
                assert proc.stdout.readline().strip() == "done"
            assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
            onnx.checker.check_model(str(target))
            got = _initializers(target)
            matches = [
                name
                for name, arrays in expected.items()
                if got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in arrays)
            ]
            assert len(matches) == 1, "the model file and its external data come from different saves"
    finally:
        for proc in procs:
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(timeout=60) == 0


def test_two_onnxopt_processes_writing_one_path(tmp_path: Path, fixtures_dir: Path) -> None:
    """Two real ``onnxopt optimize`` runs of different models write ``out/model.onnx`` (+ data) at once.

    Every round must leave one complete model, its .onnx and .data from the same run (a mix fails to load
    or computes neither model), and both runs succeed: each validates the file it staged, not whatever
    the other run has just put at the path.
    """
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    names = ("digits_cnn", "tiny_transformer")
    originals = {name: fixtures_dir / f"{name}.onnx" for name in names}
    feeds = {name: np.load(fixtures_dir / f"{name}_val.npz")["input"][:64] for name in names}
    for _ in range(2):
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onnxopt.cli",
                    "optimize",
                    str(originals[name]),
                    "-o",
                    str(target),
                    "--pass",
                    "fold",
                    "--external-data",
                    "--latency-runs",
                    "0",
                    "--json",
                    "-q",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for name in names
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            report = json.loads(out)
            assert report["final"]["passed"] and report["final"]["candidate"] == str(target)
        assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
        onnx.checker.check_model(str(target))
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        rank = len(session.get_inputs()[0].shape)
        name = next(n for n in names if feeds[n].ndim == rank)
        np.testing.assert_allclose(_run(target, feeds[name])[0], _run(originals[name], feeds[name])[0], atol=1e-4)


def test_save_hands_the_staged_file_to_before_replace(previous_output: Path, fixtures_dir: Path) -> None:
    """``before_replace`` reads the new model, complete, while the previous output is still in place."""
    seen = {}

    def before_replace(staged: Path) -> None:
        seen["staged"] = _initializers(staged)
        seen["in place"] = _initializers(previous_output)

    model_io.save(model_io.load(fixtures_dir / "tiny_transformer.onnx"), previous_output, before_replace=before_replace)
    new, old = _initializers(fixtures_dir / "tiny_transformer.onnx"), _initializers(fixtures_dir / "digits_cnn.onnx")
    assert seen["staged"].keys() == new.keys() and seen["in place"].keys() == old.keys()
    assert _initializers(previous_output).keys() == new.keys()


def test_save_copy_publishes_the_staged_bytes_or_nothing(previous_output: Path, fixtures_dir: Path) -> None:
    """A copy of a self-contained file replaces an earlier external-data save whole (its data file goes too);
    a before_replace that refuses leaves the earlier output as it was."""
    source = fixtures_dir / "tiny_transformer.onnx"
    before = {p.name: p.read_bytes() for p in previous_output.parent.iterdir()}

    def refuse(staged: Path) -> None:
        assert staged.read_bytes() == source.read_bytes()
        raise ModelError("refused")

    with pytest.raises(ModelError, match="refused"):
        model_io.save_copy(source, previous_output, before_replace=refuse)
    assert {p.name: p.read_bytes() for p in previous_output.parent.iterdir()} == before
    model_io.save_copy(source, previous_output)
    assert [p.name for p in previous_output.parent.iterdir()] == ["model.onnx"]
    assert previous_output.read_bytes() == source.read_bytes()


def test_in_place_run_is_validated_against_the_input_before_it_is_replaced(tmp_path: Path, fixtures_dir: Path) -> None:
    """Validated after the rename, the input's size would be read from the new file (size ratio 1.0)."""
    import onnxopt

    model = tmp_path / "digits_cnn.onnx"
    model.write_bytes((fixtures_dir / "digits_cnn.onnx").read_bytes())
    report = onnxopt.optimize(model, model, passes=["fold"], in_place=True, latency_runs=0)
    assert report.exit_code == 0 and report.final.candidate == str(model)
    assert report.final.size_reference == (fixtures_dir / "digits_cnn.onnx").stat().st_size
    assert report.final.size_ratio < 1.0


@pytest.mark.parametrize("coordinates", [False, True])
def test_sparse_initializers_are_loaded_dense_not_dropped(tmp_path, coordinates):
    """onnx-ir drops sparse_initializer on load; model_io densifies them first (linear or [nnz, rank] indices)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.6] = 0
    nonzero = np.argwhere(weight) if coordinates else np.flatnonzero(weight)
    values = numpy_helper.from_array(weight[weight != 0], "w")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(nonzero.astype(np.int64), "w_indices"), [16, 8])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                              sparse_initializer=[sparse])  # fmt: skip
    source, out = tmp_path / "sparse.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    model = model_io.load(source)
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), weight)
    model_io.save(model, out)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ weight, rtol=1e-5, atol=1e-6)


def test_tensor_data_counts_weights_held_in_constant_nodes(tmp_path):
    # paddle and older exporters keep weights in Constant nodes: "tensor data" must not read 0 for them
    weight = numpy_helper.from_array(np.ones((16, 8), np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["w"], value=weight), helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])  # fmt: skip
    path = tmp_path / "constant.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    summary = onnxopt.inspect(path)
    assert summary.tensor_bytes == 16 * 8 * 4 and summary.parameters == 16 * 8


def test_a_signal_during_the_renames_acts_once_model_and_data_are_both_in_place(
    previous_output: Path, fixtures_dir: Path, monkeypatch
) -> None:
    """SIGTERM right after the data file's rename: the model's rename still happens, then the handler runs."""

    class Terminated(BaseException):
        pass

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    real_replace = os.replace

    def replace_then_signal(source: Path, target: Path) -> None:
        real_replace(source, target)
        if Path(target).parent == previous_output.parent:  # a publishing rename, not one inside the staging folder
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        monkeypatch.setattr(model_io.os, "replace", replace_then_signal)
        with pytest.raises(Terminated):
            model_io.save(model_io.load(fixtures_dir / "tiny_transformer.onnx"), previous_output, external_data=True)
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGTERM) is previous
    expected, got = _initializers(fixtures_dir / "tiny_transformer.onnx"), _initializers(previous_output)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert sorted(p.name for p in previous_output.parent.iterdir()) == ["model.onnx", "model.onnx.data"]


def test_external_data_file_that_is_a_fifo_is_refused_not_read(tmp_path: Path, fixtures_dir: Path) -> None:
    path = _save_external(fixtures_dir / "iris_mlp.onnx", tmp_path / "model.onnx")
    (tmp_path / "model.onnx.data").unlink()
    os.mkfifo(tmp_path / "model.onnx.data")
    with pytest.raises(ModelError, match="'model.onnx.data' is not a regular file"):
        model_io.load(path)


# --- symlinks (issue 20: containment by resolve(), not by normpath) -------------------------------------------


def _model_in(folder: Path, fixtures_dir: Path, location: str) -> Path:
    """``folder/model.onnx`` whose tensors point at ``location``; iris's data written at ``folder/location``'s
    target."""
    proto = _with_location(folder, fixtures_dir, location)
    onnx.save(proto, folder / "model.onnx")
    return folder / "model.onnx"


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    outside, folder = tmp_path / "outside", tmp_path / "model"
    outside.mkdir()
    folder.mkdir()
    _save_external(fixtures_dir / "iris_mlp.onnx", outside / "model.onnx")  # a real data file, outside
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    path = _model_in(folder, fixtures_dir, "sub/model.onnx.data")
    assert (folder / "sub" / "model.onnx.data").is_file()  # readable through the link: only resolve() tells
    with pytest.raises(ModelError, match="outside the model's folder"):
        model_io.external_data_files(onnx.load(path, load_external_data=False), folder)
    with pytest.raises(ModelError, match="outside the model's folder"):
        model_io.load(path)


def test_a_symlinked_data_file_pointing_outside_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    outside, folder = tmp_path / "outside", tmp_path / "model"
    outside.mkdir()
    folder.mkdir()
    _save_external(fixtures_dir / "iris_mlp.onnx", outside / "model.onnx")
    path = _model_in(folder, fixtures_dir, "model.onnx.data")
    (folder / "model.onnx.data").unlink()
    (folder / "model.onnx.data").symlink_to(outside / "model.onnx.data")
    with pytest.raises(ModelError, match="outside the model's folder"):
        model_io.load(path)


def test_a_symlink_that_stays_inside_the_folder_is_accepted(tmp_path: Path, fixtures_dir: Path) -> None:
    folder = tmp_path / "model"
    (folder / "weights").mkdir(parents=True)
    _save_external(fixtures_dir / "iris_mlp.onnx", folder / "weights" / "model.onnx")
    (folder / "link").symlink_to(folder / "weights", target_is_directory=True)
    path = _model_in(folder, fixtures_dir, "link/model.onnx.data")
    assert model_io.external_data_files(onnx.load(path, load_external_data=False), folder) == {
        (folder / "weights" / "model.onnx.data").resolve()
    }
    loaded = model_io.load(path)
    assert model_io.tensor_bytes(loaded) > 0


def test_file_size_parses_only_a_file_that_spells_the_location_key_found_across_read_chunks(tmp_path: Path) -> None:
    """A self-contained model is sized without parsing it (no copy of its weights in memory): only a file whose
    bytes spell an external location's key is parsed, and the key is found wherever the read chunks split it."""
    sample = tmp_path / "bytes"
    sample.write_bytes(b"x" * 6 + b"location" + b"y" * 5)
    assert all(model_io._mentions(sample, b"location", chunk=size) for size in range(1, 20))
    assert not any(model_io._mentions(sample, b"locations", chunk=size) for size in range(1, 20))
    with pytest.raises(ModelError, match="no such file"):
        model_io.file_size(tmp_path / "missing.onnx")
