"""The cluster pass: k-means quality and speed-independent facts, both encodings, zeros kept, decoding in
onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt
from onnxopt_plugins.cluster.kmeans import cluster


@pytest.mark.parametrize("init", ["kmeans++", "linear", "density"])
def test_kmeans_is_deterministic_and_close_to_a_reference(init):
    values = np.random.default_rng(0).standard_normal(20_000)
    first, second = cluster(values, 16, init=init, seed=3), cluster(values, 16, init=init, seed=3)
    assert np.array_equal(first.centroids, second.centroids) and np.array_equal(first.labels, second.labels)
    error = np.linalg.norm(first.decoded()[0] - values) / np.linalg.norm(values)
    assert first.centroids.shape == (1, 16) and error < 0.11  # Lloyd-Max for a Gaussian at 16 levels: ~0.096


def test_kmeans_keeps_zeros_exact_and_handles_few_distinct_values():
    values = np.random.default_rng(1).standard_normal(1000)
    values[::3] = 0.0
    result = cluster(values, 8)
    assert np.all(result.decoded()[0, ::3] == 0.0) and result.centroids.shape == (1, 8)
    few = cluster(np.array([1.0, 2.0, 2.0, 1.0]), 16)
    assert few.centroids.tolist() == [[1.0, 2.0]] and few.decoded().tolist() == [[1.0, 2.0, 2.0, 1.0]]


def test_rows_are_clustered_independently_as_one_at_a_time():
    rows = np.random.default_rng(4).standard_normal((6, 500)) * np.arange(1, 7)[:, None]
    rows[2, ::4] = 0.0
    together = cluster(rows, 8, init="density")
    for index, row in enumerate(rows):
        alone = cluster(row, 8, init="density")
        assert np.allclose(together.decoded()[index], alone.decoded()[0])
    assert np.all(together.decoded()[2, ::4] == 0.0) and list(together.used) == [8] * 6


def _mlp(path: Path, opset: int, inputs: int = 64, outputs: int = 96) -> Path:
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal((inputs, outputs)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(outputs).astype(np.float32), "b")]  # fmt: skip
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", outputs])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


@pytest.mark.parametrize(("opset", "encoding", "per_channel", "index", "shape"), [
    (17, "codebook", False, "packed4", (64, 96)), (21, "codebook", False, "uint4", (64, 96)),
    (17, "codebook", True, "packed4", (64, 96)),
    (17, "codebook", False, "packed4", (63, 95)),  # an odd count of nibbles
    (17, "codebook", False, "packed4", (257, 257)),  # large enough for the table of centroid pairs, odd too
    (17, "snap", False, None, (64, 96)),
])  # fmt: skip
def test_encodings_decode_to_the_clustered_weights_in_onnxruntime(tmp_path, opset, encoding, per_channel, index, shape):
    inputs = shape[0]
    source, out = _mlp(tmp_path / "mlp.onnx", opset, *shape), tmp_path / "out.onnx"
    report = onnxopt.optimize(source, out, passes=[f"cluster:encoding={encoding},per_channel={per_channel}"],
                              gates={"min_cosine": 0.98})  # fmt: skip
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert stats["tensors_clustered"] == 1 and stats["tensors"]["w"]["k"] == 16
    x = np.random.default_rng(3).standard_normal((5, inputs)).astype(np.float32)
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    weights = numpy_helper.to_array(onnx.load(source).graph.initializer[0])
    if encoding == "snap":
        assert len(np.unique(numpy_helper.to_array(onnx.load(out).graph.initializer[0]))) == 16
    else:
        assert stats["encoding"] == f"{index} codebook"
        pair_table = any(t.name == "w_cluster_pairs" for t in onnx.load(out).graph.initializer)
        assert pair_table == (shape[0] * shape[1] >= 65536)
        # 4-bit indices are ~1/8 of the float weights; per channel adds a [96 x 16] float codebook
        assert out.stat().st_size < (0.5 if per_channel else 0.2) * source.stat().st_size
    relative = np.linalg.norm(got - (x @ weights + numpy_helper.to_array(onnx.load(source).graph.initializer[1])))
    assert relative / np.linalg.norm(got) < 0.15


def test_biases_and_small_tensors_are_left_alone(fixtures_dir, tmp_path):
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "c.onnx", passes=["fold", "cluster"],
                              data=fixtures_dir / "digits_cnn_val.npz", gates={"max_accuracy_drop": 0.01})  # fmt: skip
    assert report.exit_code == 0, report.message
    clustered = report.steps[1].stats["tensors"]
    assert set(clustered) == {"conv2.weight"}  # conv1 (72 values), fc (640) and every bias stay float
    summary = onnxopt.inspect(tmp_path / "c.onnx")
    assert any(t.name.endswith("cluster_codebook") and t.unique_values <= 16 for t in summary.tensors)


@pytest.mark.parametrize("sensitive_k", [256, 0])
def test_min_cosine_spares_the_sensitive_tensor(tmp_path, sensitive_k):
    source, out = _mlp(tmp_path / "mlp.onnx", 17), tmp_path / "out.onnx"
    x = np.random.default_rng(5).standard_normal((40, 64)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    passes = [f"cluster:k=2,min_cosine=0.9999,sensitive_k={sensitive_k}"]
    report = onnxopt.optimize(source, out, passes=passes, data=tmp_path / "data.npz", gates={"min_cosine": 0.9999})
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert list(stats["spared"]) == ["w"] and stats["probe_cosine"] >= 0.9999  # k=2 alone loses far more
    assert stats["spared"]["w"].endswith("k=256 per tensor" if sensitive_k else "left float")
    names = {t.name for t in onnx.load(out).graph.initializer}
    assert ("w" in names) == (sensitive_k == 0) and stats["tensors_clustered"] == (1 if sensitive_k else 0)


def test_min_cosine_without_data_is_a_usage_error(tmp_path):
    source = _mlp(tmp_path / "mlp.onnx", 17)
    with pytest.raises(onnxopt.OnnxoptError, match="needs data") as error:
        onnxopt.optimize(source, tmp_path / "out.onnx", passes=["cluster:min_cosine=0.99"])
    assert error.value.exit_code == 2 and not (tmp_path / "out.onnx").exists()


def _conv_transpose(path: Path) -> Path:
    weight = numpy_helper.from_array(np.random.default_rng(6).standard_normal((8, 16, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("ConvTranspose", ["x", "w"], ["y"])], "deconv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 7, 7])],
                              [weight])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("model", ["digits_cnn", "mlp", "conv_transpose"])  # channel axis 0 of 4-D, last of 2-D, middle
def test_per_channel_codebook_decodes_exactly_to_the_snapped_weights(fixtures_dir, tmp_path, model):
    source = {"digits_cnn": lambda: fixtures_dir / "digits_cnn.onnx", "mlp": lambda: _mlp(tmp_path / "m.onnx", 17),
              "conv_transpose": lambda: _conv_transpose(tmp_path / "d.onnx")}[model]()  # fmt: skip
    outputs = {}
    for encoding in ("codebook", "snap"):
        out = tmp_path / f"{encoding}.onnx"
        report = onnxopt.optimize(source, out, passes=[f"cluster:per_channel=true,min_elements=64,encoding={encoding}"],
                                  gates={"min_cosine": 0.9})  # fmt: skip
        assert report.exit_code == 0, report.message
        session = ort.InferenceSession(str(out))
        spec = session.get_inputs()[0]
        x = (
            np.random.default_rng(7)
            .standard_normal([d if isinstance(d, int) else 2 for d in spec.shape])
            .astype(np.float32)
        )
        outputs[encoding] = session.run(None, {spec.name: x})[0]
    assert np.array_equal(outputs["codebook"], outputs["snap"])


def _optimized_ops(path: Path, tmp_path: Path) -> list[str]:
    """The op types onnxruntime really runs (ORT_ENABLE_EXTENDED: fusions, no hardware-specific layout)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sorted(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def _quantized_mlp(tmp_path: Path, mode: str, before: list[str]) -> tuple[Path, Path]:
    """The test MLP (64 x 96 weight) through ``before`` and int8 quantization; returns (model, its data)."""
    source = _mlp(tmp_path / "mlp.onnx", 17)
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(8).standard_normal((32, 64)).astype(np.float32))
    quantized = tmp_path / f"{mode}.onnx"
    report = onnxopt.optimize(source, quantized, passes=[*before, f"quantize:mode={mode}"], data=tmp_path / "data.npz",
                              gates={"min_cosine": 0.9})  # fmt: skip
    assert report.exit_code == 0, report.message
    return quantized, tmp_path / "data.npz"


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_weights_stored_in_4_bits_still_run_as_int8(tmp_path, mode):
    quantized, data = _quantized_mlp(tmp_path, mode, [])
    x = {"x": np.load(data)["x"]}
    outputs, ops = {}, {}
    for encoding in ("codebook", "snap"):
        out = tmp_path / f"{mode}_{encoding}.onnx"
        report = onnxopt.optimize(quantized, out, passes=[f"cluster:encoding={encoding}"], gates={"min_cosine": 0.9})
        assert report.exit_code == 0, report.message
        (weight,) = report.steps[0].stats["tensors"].values()
        assert weight["stored"] == ("packed4" if encoding == "codebook" else "snap") and weight["unique"] <= 16
        outputs[encoding] = ort.InferenceSession(str(out)).run(None, x)[0]
        ops[encoding] = _optimized_ops(out, tmp_path)
    assert np.array_equal(outputs["codebook"], outputs["snap"])  # the decoder yields the clustered int8 tensor
    # onnxruntime folds the decoder and runs the same int8 kernels (QGemm: fold made the MatMul + Add a Gemm;
    # MatMulInteger)
    assert ops["codebook"] == ops["snap"] and "Gather" not in ops["codebook"]
    assert {"QGemm", "MatMulInteger", "DynamicQuantizeMatMul"} & set(ops["codebook"])
    size = (tmp_path / f"{mode}_codebook.onnx").stat().st_size
    assert size < 0.7 * quantized.stat().st_size  # 6144 int8 weights (~6 kB) -> ~3 kB of nibbles + decoder


def test_weights_clustered_then_quantized_per_channel_are_encoded_exactly(tmp_path):
    # clustered per tensor, quantized per channel: each channel holds <= 16 of the 96 x 16 distinct integers
    quantized, data = _quantized_mlp(tmp_path, "static", ["cluster:encoding=snap"])
    out = tmp_path / "encoded.onnx"
    report = onnxopt.optimize(quantized, out, passes=["cluster"], gates={"min_cosine": 0.9})
    assert report.exit_code == 0, report.message
    (weight,) = report.steps[0].stats["tensors"].values()
    assert weight["rel_l2"] == 0.0 and weight["stored"] == "packed4"
    x = {"x": np.load(data)["x"]}
    before, after = (ort.InferenceSession(str(path)).run(None, x)[0] for path in (quantized, out))
    # 3 kB of nibbles + a [96 x 16] int8 codebook (1.5 kB) instead of 6 kB of int8 weights
    assert np.array_equal(before, after) and out.stat().st_size < 0.9 * quantized.stat().st_size


def test_small_weights_stay_snapped_where_a_codebook_would_cost_more(fixtures_dir, tmp_path):
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "c.onnx",
                              passes=["fold", "cluster:min_elements=64"], gates={"min_cosine": 0.9})  # fmt: skip
    assert report.exit_code == 0, report.message
    stored = {name: t["stored"] for name, t in report.steps[1].stats["tensors"].items()}
    # 72 values: uint8 indices + codebook + decoder > 288 bytes of floats; 640: uint8 beats unpacking nibbles
    assert stored == {"conv1.weight": "snap", "conv2.weight": "packed4", "fc.weight": "uint8"}


def test_quantized_embedding_table_is_clustered_too(tmp_path):
    rng = np.random.default_rng(9)
    table = numpy_helper.from_array(rng.standard_normal((500, 32)).astype(np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "embedding",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])], [table])  # fmt: skip
    source = tmp_path / "embedding.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    quantized, out = tmp_path / "q.onnx", tmp_path / "c.onnx"
    assert (
        onnxopt.optimize(source, quantized, passes=["quantize:mode=dynamic"], gates={"min_cosine": 0.9}).exit_code == 0
    )
    report = onnxopt.optimize(quantized, out, passes=["cluster"], gates={"min_cosine": 0.9})
    assert report.exit_code == 0, report.message
    (weight,) = report.steps[0].stats["tensors"].values()  # the uint8 table read by Gather -> DequantizeLinear
    assert weight["stored"] == "packed4" and out.stat().st_size < 0.6 * quantized.stat().st_size
    ids = {"ids": np.arange(0, 500, 7, dtype=np.int64)}
    got, want = (ort.InferenceSession(str(p)).run(None, ids)[0] for p in (out, source))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.15


@pytest.mark.parametrize(("option", "accepted", "refused", "bound"), [
    ("k", "2", "1", ">= 2, <= 256"), ("k", "256", "257", ">= 2, <= 256"),
    ("min_elements", "1", "0", ">= 1"), ("iterations", "1", "0", ">= 1"),
    ("min_cosine", "0", "-0.1", ">= 0, <= 1"), ("min_cosine", "1", "1.01", ">= 0, <= 1"),
    ("sensitive_k", "0", "-1", ">= 0, <= 256"), ("sensitive_k", "256", "257", ">= 0, <= 256"),
])  # fmt: skip
def test_declared_option_ranges_hold_on_both_sides(option, accepted, refused, bound):
    from onnxopt.session import Session

    spec = Session().passes.get("cluster")
    assert getattr(spec.parse_options({option: accepted}), option) == float(accepted)
    with pytest.raises(onnxopt.UsageError, match=f"pass 'cluster': {option} must be {bound}, got {refused}"):
        spec.parse_options({option: refused})
    assert f"({bound})" in {info.name: info.help for info in spec.option_fields()}[option]


def test_sensitive_k_is_zero_or_a_real_codebook():
    from onnxopt_plugins.cluster import ClusterOptions

    assert ClusterOptions(sensitive_k=2).sensitive_k == 2
    with pytest.raises(ValueError, match="sensitive_k must be 0 or between 2 and 256"):
        ClusterOptions(sensitive_k=1)


def test_importing_the_plugin_loads_no_heavy_module():
    """The CLI loads every plugin before parsing: cluster registers without numpy, onnx or onnx_ir."""
    import subprocess
    import sys

    code = ("import sys, onnxopt_plugins.cluster as p; p.onnxopt_register_passes(lambda spec: None); "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnx_ir', 'onnxruntime') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
