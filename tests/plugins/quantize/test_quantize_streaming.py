"""The quantize pass's streaming dynamic int8 path (plugins/quantize/streaming.py) against onnxruntime's
``quantize_dynamic`` on the same models: same graph, bit-identical weights, bit-identical outputs.

Tolerance: none. Every weight, scale and zero point is compared byte for byte and the models' outputs with
``assert_array_equal`` (same graph, same weights, same onnxruntime kernels).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from paths import FIXTURES

import onnxopt
from onnxopt_plugins.quantize import streaming

sys.path.insert(0, str(FIXTURES))

import build_large_model  # noqa: E402


def _ort_dynamic(source: Path, out: Path, per_channel: bool, weight_type: str, symmetric: bool, excluded=(),
                 reduce_range: bool = False) -> Path:  # fmt: skip
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), per_channel=per_channel, nodes_to_exclude=list(excluded),
                     weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
                     reduce_range=reduce_range, extra_options={"WeightSymmetric": symmetric})  # fmt: skip
    return out


def _graph(path: Path) -> tuple[list, dict]:
    """(nodes as name / op type / inputs / outputs / attributes, sorted: the two paths order independent nodes
    differently; initializers as dtype / shape / bytes) of a file."""
    graph = onnx.load(str(path)).graph
    nodes = sorted(
        (n.name, n.op_type, list(n.input), list(n.output), [helper.get_attribute_value(a) for a in n.attribute])
        for n in graph.node
    )
    inits = {t.name: (t.data_type, list(t.dims), numpy_helper.to_array(t).tobytes()) for t in graph.initializer}
    return nodes, inits


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _shared_model(path: Path) -> Path:
    """Two MatMuls reading one activation; one weight read by two MatMuls and by an Add (onnxruntime dequantizes
    its int8 copy for the Add); Gemms onnxruntime turns into MatMul (transB=0), MatMul + Add (transB=1 with C)
    or leaves alone (alpha != 1); a MatMul with a computed B and one excluded."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32) / 6, name)
        for name in ("w0", "w1", "w2", "g", "gt", "ga")
    ]
    inits.append(numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "bias"))
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="mm_a"),
        helper.make_node("MatMul", ["x", "w1"], ["b"], name="mm_b"),
        helper.make_node("MatMul", ["a", "w1"], ["c"], name="mm_c"),
        helper.make_node("Add", ["c", "w1"], ["d"], name="add_w1"),
        helper.make_node("Gemm", ["d", "g"], ["e"], name="gemm"),
        helper.make_node("Gemm", ["e", "gt", "bias"], ["e2"], name="gemm_t", transB=1),
        helper.make_node("Gemm", ["e2", "ga"], ["e3"], name="gemm_alpha", alpha=0.5),
        helper.make_node("MatMul", ["e3", "b"], ["f"], name="mm_computed"),
        helper.make_node("MatMul", ["f", "w2"], ["y"], name="mm_excluded"),
    ]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 32])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("weight_type", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_streamed_file_is_onnxruntimes(
    tmp_path: Path, per_channel: bool, weight_type: str, symmetric: bool, reduce_range: bool
) -> None:
    """External-data model, every weight option: onnxruntime's nodes, names and weight bytes, its outputs exactly."""
    source = build_large_model.build(tmp_path / "m.onnx", layers=3, hidden=64)
    expected = _ort_dynamic(source, tmp_path / "ort.onnx", per_channel, weight_type, symmetric, (), reduce_range)
    options = type(
        "Options", (), {"weight_type": weight_type, "symmetric_weights": symmetric, "per_channel": per_channel}
    )
    stats: dict = {}
    streamed = streaming.quantize_file(source, tmp_path / "s.onnx", [], True, options=options,
                                       reduce_range=reduce_range, stats=stats)  # fmt: skip

    assert _graph(streamed) == _graph(expected)
    assert stats["quantized"] == {"MatMul": 3} and stats["path"].startswith("streaming")
    assert (tmp_path / "s.onnx.data").is_file()  # external data in, external data out
    feed = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}
    np.testing.assert_array_equal(_run(streamed, feed)[0], _run(expected, feed)[0])


def test_shared_values_exclusions_and_what_stays_float(tmp_path: Path) -> None:
    source = _shared_model(tmp_path / "shared.onnx")
    expected = _ort_dynamic(source, tmp_path / "ort.onnx", True, "int8", True, excluded=["mm_excluded"])
    options = type("Options", (), {"weight_type": "int8", "symmetric_weights": True, "per_channel": True})
    stats: dict = {}
    streamed = streaming.quantize_file(
        source, tmp_path / "s.onnx", ["mm_excluded"], False, options=options, reduce_range=False, stats=stats
    )

    nodes, inits = _graph(streamed)
    assert (nodes, inits) == _graph(expected)
    assert [n[1] for n in nodes].count("DynamicQuantizeLinear") == 4  # x (shared by mm_a, mm_b), a, d, e
    assert {"w2", "ga", "w1_quantized", "gt_Transposed_quantized"} <= set(inits) and not {"w0", "g", "gt"} & set(inits)
    assert stats["quantized"] == {"MatMul": 3, "Gemm": 2} and stats["weights_quantized"] == 4
    assert stats["left_float"] == {"MatMul": 1} and stats["weights_dequantized_for_other_readers"] == 1
    feed = {"x": np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)}
    np.testing.assert_array_equal(_run(streamed, feed)[0], _run(expected, feed)[0])


def test_float_weights_are_unmapped_once_quantized(tmp_path: Path) -> None:
    """The point of the path: each external float tensor's memory map is closed before the model is saved."""
    source = build_large_model.build(tmp_path / "m.onnx", layers=4, hidden=32)
    model = onnxopt.load(source)
    floats = [model.graph.initializers[f"layer{i}.weight"].const_value for i in range(4)]
    rewrite = streaming.StreamingDynamicQuantizePass()
    assert rewrite(model).modified
    assert all(t.raw is None for t in floats)  # ExternalTensor.release() ran
    assert not any(name.endswith(".weight") for name in model.graph.initializers)


def test_pipeline_streaming_on_gives_the_onnxruntime_paths_file(fixtures_dir: Path, tmp_path: Path) -> None:
    """tiny_transformer (8 weight MatMuls / Gemms, q/k/v on one activation, 2 MatMuls with computed B) through
    optimize."""
    files, reports = {}, {}
    for setting in ("on", "off"):
        files[setting] = tmp_path / f"{setting}.onnx"
        reports[setting] = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", files[setting],
                                            passes=["fold", f"quantize:mode=dynamic,streaming={setting}"],
                                            data=fixtures_dir / "tiny_transformer_val.npz", latency_runs=0)  # fmt: skip
        assert reports[setting].exit_code == 0, reports[setting].message
    assert reports["on"].steps[1].stats["path"].startswith("streaming")
    assert reports["off"].steps[1].stats["path"] == "onnxruntime quantize_dynamic"
    assert reports["on"].steps[1].stats["quantized"] == {"MatMul": 7, "Gemm": 1}  # fold made the head a Gemm
    # the two paths order q/k/v's nodes differently, so the short names given in order differ: same weights
    # (names and bytes), same ops, same outputs
    (on_nodes, on_inits), (off_nodes, off_inits) = _graph(files["on"]), _graph(files["off"])
    assert on_inits == off_inits
    assert sorted((n[1], str(n[4])) for n in on_nodes) == sorted((n[1], str(n[4])) for n in off_nodes)
    feed = {"input": np.load(fixtures_dir / "tiny_transformer_val.npz")["input"]}
    np.testing.assert_array_equal(_run(files["on"], feed)[0], _run(files["off"], feed)[0])


def test_auto_streams_only_past_the_threshold(fixtures_dir: Path, tmp_path: Path, monkeypatch) -> None:
    def path_taken() -> str:
        report = onnxopt.optimize(fixtures_dir / "iris_mlp.onnx", tmp_path / "q.onnx", passes=["quantize:mode=dynamic"],
                                  latency_runs=0)  # fmt: skip
        assert report.exit_code == 0, report.message
        return report.steps[0].stats["path"]

    assert path_taken() == "onnxruntime quantize_dynamic"
    monkeypatch.setattr(streaming, "STREAMING_MIN_BYTES", 0)
    assert path_taken().startswith("streaming")


def test_streaming_on_with_other_op_types_is_a_usage_error(fixtures_dir: Path, tmp_path: Path, run_cli) -> None:
    done = run_cli("optimize", fixtures_dir / "iris_mlp.onnx", "-o", tmp_path / "q.onnx", "--pass",
                   "quantize:mode=dynamic,streaming=on,op_types=Conv")  # fmt: skip
    assert done.returncode == 2 and "streaming=on" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_ops_onnxruntime_would_quantize_are_reported_as_not_streamed(tmp_path: Path) -> None:
    """An embedding table (Gather on an initializer) stays float here; the report says so."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")]  # fmt: skip
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]), helper.make_node("MatMul", ["emb", "w"], ["y"])]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])], inits)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "emb.onnx")
    model = onnxopt.load(tmp_path / "emb.onnx")
    rewrite = streaming.StreamingDynamicQuantizePass()
    rewrite(model)
    assert rewrite.stats["quantized"] == {"MatMul": 1} and rewrite.stats["ops_not_streamed"] == {"Gather": 1}
    assert model.graph.initializers["table"].const_value.numpy().dtype == np.float32
