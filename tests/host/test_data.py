"""onnxopt.data: reading .npz files and folders, synthetic inputs, batching, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from onnxopt import data
from onnxopt.errors import DataError, UsageError
from onnxopt.host_plugin import open_source
from onnxopt.synthetic import synthetic


def _model(*inputs: tuple[str, list | None], dtype: int = TensorProto.FLOAT) -> ir.Model:
    """A model whose inputs have the given dims (None: unknown rank); each feeds an Identity to an output."""
    values = [helper.make_tensor_value_info(name, dtype, dims) for name, dims in inputs]
    outputs = [helper.make_tensor_value_info(f"{name}_out", dtype, None) for name, _ in inputs]
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _ in inputs]
    graph = helper.make_graph(nodes, "g", values, outputs)
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.fixture(scope="module")
def iris(fixtures_dir: Path) -> ir.Model:
    return ir.load(fixtures_dir / "iris_mlp.onnx")


@pytest.fixture(scope="module")
def iris_val(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "iris_mlp_val.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _rows(dataset: data.Dataset, name: str = "input") -> list[np.ndarray]:
    return [feed[name] for feed in dataset.feeds()]


# --- reading --------------------------------------------------------------------------------------------------


def test_input_specs(iris: ir.Model) -> None:
    (spec,) = data.input_specs(iris)
    assert (spec.name, spec.dtype, spec.dims) == ("input", np.dtype(np.float32), ("batch", 4))


def test_npz(iris: ir.Model, iris_val: dict[str, np.ndarray], fixtures_dir: Path) -> None:
    dataset = open_source(str(fixtures_dir / "iris_mlp_val.npz"), iris)
    assert dataset.num_samples == 30 and not dataset.synthetic
    np.testing.assert_array_equal(dataset.labels, iris_val["labels"])
    np.testing.assert_array_equal(np.concatenate(_rows(dataset)), iris_val["input"])


def test_folder_of_npy(tmp_path: Path, iris: ir.Model, iris_val: dict[str, np.ndarray]) -> None:
    for key, array in iris_val.items():
        np.save(tmp_path / f"{key}.npy", array)
    assert data.load_arrays(tmp_path).keys() == {"input", "labels"}
    dataset = open_source(str(tmp_path), iris)
    np.testing.assert_array_equal(dataset.labels, iris_val["labels"])
    np.testing.assert_array_equal(np.concatenate(_rows(dataset)), iris_val["input"])


def test_folder_of_npz_is_concatenated_in_name_order(
    tmp_path: Path, iris: ir.Model, iris_val: dict[str, np.ndarray]
) -> None:
    np.savez(tmp_path / "part2.npz", input=iris_val["input"][10:], labels=iris_val["labels"][10:])
    np.savez(tmp_path / "part1.npz", input=iris_val["input"][:10], labels=iris_val["labels"][:10])
    dataset = open_source(str(tmp_path), iris)
    assert dataset.num_samples == 30
    np.testing.assert_array_equal(dataset.labels, iris_val["labels"])
    np.testing.assert_array_equal(np.concatenate(_rows(dataset)), iris_val["input"])


def test_folder_mixing_npy_and_npz_is_an_error(tmp_path: Path) -> None:
    np.save(tmp_path / "input.npy", np.zeros((2, 4), np.float32))
    np.savez(tmp_path / "more.npz", input=np.zeros((2, 4), np.float32))
    with pytest.raises(DataError, match="both .npy and .npz"):
        data.load_arrays(tmp_path)


def test_pickled_npy_in_a_folder_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "input.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled objects"):
        data.load_arrays(tmp_path)


def test_missing_source_is_an_error(tmp_path: Path, iris: ir.Model) -> None:
    with pytest.raises(DataError, match="no such data file or folder"):
        open_source(str(tmp_path / "nope.npz"), iris)


# --- synthetic ------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed(iris: ir.Model) -> None:
    first = open_source("synthetic:5", iris, seed=0)
    again = open_source("synthetic:5", iris, seed=0)
    other = open_source("synthetic:5", iris, seed=1)
    assert first.synthetic and first.name == "synthetic:5" and first.labels is None
    a, b, c = (np.concatenate(_rows(d)) for d in (first, again, other))
    assert a.shape == (5, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("source", ["synthetic:0", "synthetic:-3", "synthetic:many", "synthetic:"])
def test_synthetic_count_must_be_positive(iris: ir.Model, source: str) -> None:
    with pytest.raises(UsageError, match="synthetic:N"):
        open_source(source, iris)


def test_synthetic_symbolic_non_batch_dims_are_derived_or_taken_from_shape() -> None:
    model = _model(("tokens", ["batch", "seq", 8]))
    derived = _rows(synthetic(3, model), "tokens")
    assert len(derived) == 3 and all(f.shape == (1, 16, 8) for f in derived)  # batch 1, a sequence length tried first
    given = _rows(synthetic(3, model, shapes={"tokens": (2, 5, 8)}), "tokens")
    assert len(given) == 3 and all(f.shape == (2, 5, 8) and f.dtype == np.float32 for f in given)


def test_synthetic_unknown_rank_needs_a_shape() -> None:
    model = _model(("x", None))
    with pytest.raises(UsageError, match="unknown shape"):
        synthetic(2, model)
    # each feed is exactly the given shape (not rows of it, which would add an axis)
    assert [f.shape for f in _rows(synthetic(2, model, shapes={"x": (1, 3)}), "x")] == [(1, 3), (1, 3)]


@pytest.mark.parametrize(
    ("shapes", "message"),
    [({"nope": (1, 4)}, "unknown input"), ({"input": (1, 5)}, "does not fit")],
    ids=["unknown-input", "wrong-shape"],
)
def test_synthetic_bad_shapes(iris: ir.Model, shapes: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        synthetic(2, iris, shapes=shapes)


def test_synthetic_integer_and_bool_inputs() -> None:
    ids = synthetic(4, _model(("ids", ["batch", 3]), dtype=TensorProto.INT64))
    (feed,) = _rows(ids, "ids")
    assert feed.dtype == np.int64 and feed.shape == (4, 3) and feed.min() >= 0 and feed.max() < 10
    mask = synthetic(4, _model(("mask", ["batch", 3]), dtype=TensorProto.BOOL))
    assert _rows(mask, "mask")[0].dtype == np.bool_


# --- batching -------------------------------------------------------------------------------------------------


def test_symbolic_batch_is_fed_batch_size_rows(iris: ir.Model, iris_val: dict[str, np.ndarray]) -> None:
    dataset = data.from_arrays("val", iris_val, iris, batch_size=8)
    feeds = _rows(dataset)
    assert dataset.num_feeds == 4
    assert [len(f) for f in feeds] == [8, 8, 8, 6]
    np.testing.assert_array_equal(np.concatenate(feeds), iris_val["input"])
    np.testing.assert_array_equal(dataset.first_feed()["input"], iris_val["input"][:8])


@pytest.mark.parametrize("rows", [0, 1])
def test_data_without_samples_is_an_error(iris: ir.Model, iris_val: dict[str, np.ndarray], rows: int) -> None:
    arrays = {"input": iris_val["input"][:rows]}
    if rows == 0:
        with pytest.raises(DataError, match="holds no samples"):
            data.from_arrays("empty.npz", arrays, iris)
    else:
        assert data.from_arrays("one.npz", arrays, iris).num_samples == 1


def test_cli_with_an_empty_data_file_is_a_one_line_error(tmp_path: Path, fixtures_dir: Path, run_cli) -> None:
    empty = tmp_path / "empty.npz"
    np.savez(empty, input=np.zeros((0, 4), np.float32))
    result = run_cli("optimize", fixtures_dir / "iris_mlp.onnx", "-o", tmp_path / "o.onnx", "--pass", "fold",
                     "--data", empty)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr and "holds no samples" in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_symbolic_batch_default_batch_size(iris: ir.Model, fixtures_dir: Path) -> None:
    with np.load(fixtures_dir / "digits_cnn_val.npz") as npz:
        images = npz["input"]
    model = ir.load(fixtures_dir / "digits_cnn.onnx")
    dataset = data.from_arrays("val", {"input": images}, model)
    sizes = [len(f) for f in _rows(dataset)]
    assert sizes == [data.DEFAULT_BATCH_SIZE] * (400 // data.DEFAULT_BATCH_SIZE) + [400 % data.DEFAULT_BATCH_SIZE]


def test_fixed_batch_1_is_fed_one_row_at_a_time() -> None:
    model = _model(("x", [1, 4]))
    array = np.arange(20, dtype=np.float32).reshape(5, 4)
    dataset = data.from_arrays("d", {"x": array}, model, batch_size=32)
    feeds = _rows(dataset, "x")
    assert dataset.num_feeds == 5 and dataset.num_samples == 5
    assert all(f.shape == (1, 4) for f in feeds)
    np.testing.assert_array_equal(np.concatenate(feeds), array)


def test_fixed_batch_d_is_fed_d_rows() -> None:
    model = _model(("x", [2, 4]))
    array = np.arange(24, dtype=np.float32).reshape(6, 4)
    assert [f.shape for f in _rows(data.from_arrays("d", {"x": array}, model), "x")] == [(2, 4)] * 3
    with pytest.raises(DataError, match="7 samples cannot be fed 2 at a time"):
        data.from_arrays("d", {"x": np.zeros((7, 4), np.float32)}, model)


@pytest.mark.parametrize("dims", [[1, 4], ["batch", 4]], ids=["fixed-batch", "symbolic-batch"])
def test_stacked_whole_feeds(dims: list) -> None:
    model = _model(("x", dims))
    array = (
        np.arange(36, dtype=np.float32).reshape(3, 3, 4)
        if dims[0] == "batch"
        else np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    )
    dataset = data.from_arrays("d", {"x": array}, model)
    feeds = _rows(dataset, "x")
    assert dataset.num_feeds == 3 and dataset.num_samples == 3
    for index, feed in enumerate(feeds):
        np.testing.assert_array_equal(feed, array[index])


def test_constant_input_is_the_same_in_every_feed() -> None:
    model = _model(("x", ["batch", 4]), ("state", [2, 3]))
    arrays = {"x": np.zeros((5, 4), np.float32), "state": np.ones((2, 3), np.float32)}
    dataset = data.from_arrays("d", arrays, model, batch_size=2)
    feeds = list(dataset.feeds())
    assert [len(f["x"]) for f in feeds] == [2, 2, 1]
    assert all(f["state"] is arrays["state"] for f in feeds)


def test_split_holds_out_random_rows_with_their_labels_and_shares_constants() -> None:
    model = _model(("x", ["batch", 4]), ("state", [2, 3]))
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    arrays = {"x": x, "state": np.ones((2, 3), np.float32), "labels": np.arange(10)}
    kept, held = data.from_arrays("d", arrays, model, batch_size=3).split(3, np.random.default_rng(0))
    assert (kept.num_samples, held.num_samples) == (7, 3) and (kept.name, held.name) == ("d", "d, held out")
    rows = {name: np.concatenate(_rows(part, "x"))[:, 0] // 4 for name, part in (("kept", kept), ("held", held))}
    assert sorted([*rows["kept"], *rows["held"]]) == list(range(10))  # disjoint, and every row somewhere
    assert rows["held"].tolist() != [7, 8, 9]  # drawn, not the tail
    for name, part in (("kept", kept), ("held", held)):
        np.testing.assert_array_equal(part.labels, rows[name])
        assert max(len(f["x"]) for f in part.feeds()) == 3 and all(f["state"] is arrays["state"] for f in part.feeds())


@pytest.mark.parametrize("held", [0, 10, 11])
def test_split_that_leaves_a_side_empty_is_refused(held: int) -> None:
    dataset = data.from_arrays("d", {"x": np.zeros((10, 4), np.float32)}, _model(("x", ["batch", 4])))
    assert dataset.split(held, np.random.default_rng(0)) is None
    assert [p.num_samples for p in dataset.split(9, np.random.default_rng(0))] == [1, 9]
    assert [p.num_samples for p in dataset.split(1, np.random.default_rng(0))] == [9, 1]


def test_split_of_random_inputs_stays_random_inputs() -> None:
    model = _model(("x", ["batch", 4]))
    dataset = data.Dataset("r", {"x": np.zeros((10, 4), np.float32)}, data.input_specs(model), synthetic=True)
    assert [part.synthetic for part in dataset.split(5, np.random.default_rng(0))] == [True, True]


def test_split_keeps_the_batch_the_model_fixes() -> None:
    dataset = data.from_arrays("d", {"x": np.zeros((6, 4), np.float32)}, _model(("x", [2, 4])))
    assert dataset.split(1, np.random.default_rng(0)) is None  # 5 and 1 rows cannot be fed 2 at a time
    kept, held = dataset.split(2, np.random.default_rng(0))
    assert [f["x"].shape for f in held.feeds()] == [(2, 4)] and kept.num_feeds == 2


# --- errors ---------------------------------------------------------------------------------------------------


def test_labels_length_mismatch(iris: ir.Model, iris_val: dict[str, np.ndarray]) -> None:
    arrays = {"input": iris_val["input"], "labels": iris_val["labels"][:29]}
    with pytest.raises(DataError, match="29 labels for 30 samples"):
        data.from_arrays("val", arrays, iris)


def test_labels_must_be_integer_class_ids(iris: ir.Model, iris_val: dict[str, np.ndarray]) -> None:
    arrays = {"input": iris_val["input"], "labels": iris_val["labels"].astype(np.float32)}
    with pytest.raises(DataError, match="1-D array of integer class ids"):
        data.from_arrays("val", arrays, iris)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((3, 4), np.float32)}, "missing input(s) 'input'"),
        ({"input": np.zeros((3, 4), np.float64)}, "input 'input': dtype float64, the model expects float32"),
        ({"input": np.zeros((3, 5), np.float32)}, "input 'input': array of shape [3, 5] does not fit"),
    ],
    ids=["wrong-name", "wrong-dtype", "wrong-shape"],
)
def test_arrays_that_do_not_fit(iris: ir.Model, arrays: dict, message: str) -> None:
    with pytest.raises(DataError) as info:
        data.from_arrays("d", arrays, iris)
    assert message in str(info.value)


def test_inputs_with_different_sample_counts() -> None:
    model = _model(("a", ["batch", 2]), ("b", ["batch", 2]))
    arrays = {"a": np.zeros((4, 2), np.float32), "b": np.zeros((5, 2), np.float32)}
    with pytest.raises(DataError, match="different numbers of samples"):
        data.from_arrays("d", arrays, model)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input=1x3x224x224", ("input", (1, 3, 224, 224))),
        ("x=7", ("x", (7,))),
        ("rate=", ("rate", ())),
        ("n=2X3", ("n", (2, 3))),
    ],
)
def test_parse_shape(text: str, expected: tuple) -> None:
    assert data.parse_shape(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input", "expected NAME=DxDxD"),
        ("=1x3", "expected NAME=DxDxD"),
        ("input=1xa", "must be integers"),
        ("input=1x", "must be integers"),
        ("input=1,3", "must be integers"),
        ("input=0x3", "must be positive"),
        ("input=-1x3", "must be positive"),
    ],
)
def test_parse_shape_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        data.parse_shape(text)
    assert text in str(info.value)


def test_default_batch_fits_a_byte_budget_and_an_explicit_one_is_kept() -> None:
    images = _model(("x", ["batch", 3, 640, 640]))
    big = {"x": np.zeros((3, 3, 640, 640), np.float32)}  # 4.9 MB a row: one row per feed
    assert data.from_arrays("pages", big, images).num_feeds == 3
    assert data.from_arrays("pages", big, images, batch_size=2).num_feeds == 2
    small = _model(("x", ["batch", 4]))
    assert data.from_arrays("rows", {"x": np.zeros((40, 4), np.float32)}, small).num_feeds == 2  # 32 + 8 rows
    row_bytes = 3 * 64 * 64 * 4
    fitting = data.FEED_INPUT_BYTES // row_bytes  # 85 rows fit, capped at 32; at 128x128 each, 21 fit
    assert fitting > data.DEFAULT_BATCH_SIZE
    wide = _model(("x", ["batch", 3, 128, 128]))
    assert data.from_arrays("w", {"x": np.zeros((42, 3, 128, 128), np.float32)}, wide).num_feeds == 2


def test_an_exporters_minus_one_dim_is_symbolic_and_synthetic_inputs_still_come() -> None:
    """PaddleOCR's cls model declares x [-1, 3, -1, -1]: random inputs crashed on a negative size."""
    model = _model(("x", [-1, 3, -1, -1]))
    assert data.input_specs(model)[0].dims == (None, 3, None, None)
    feed = next(iter(synthetic(2, model, seed=0).feeds()))
    assert feed["x"].shape[1] == 3 and min(feed["x"].shape) > 0
    assert data.fits((1, 3, 48, 192), data.input_specs(model)[0].dims)
