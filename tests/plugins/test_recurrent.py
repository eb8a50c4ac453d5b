"""Recurrent weights (LSTM / GRU W and R) through quantize and cluster, binarization, and the weights each pass
reports it left alone — on a small onnx.helper model run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt

SEQ, FEATURES, HIDDEN, CLASSES = 6, 24, 32, 10
#: Random weights clustered to 8 levels, or binarized, lose accuracy; these tests check structure, not fidelity.
LOOSE = {"min_cosine": 0.0, "min_channel_cosine": 0.0}


def _recurrent_model(path: Path, opset: int = 17) -> Path:
    """x [batch, 6, 24] -> bidirectional LSTM -> GRU -> MatMul [32, 10] (too small to cluster) -> [6, batch, 10]."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32), name)

    inits = [
        weight("lstm_w", 2, 4 * HIDDEN, FEATURES), weight("lstm_r", 2, 4 * HIDDEN, HIDDEN),
        weight("lstm_b", 2, 8 * HIDDEN),
        weight("gru_w", 1, 3 * HIDDEN, 2 * HIDDEN), weight("gru_r", 1, 3 * HIDDEN, HIDDEN),
        weight("head", HIDDEN, CLASSES),
        numpy_helper.from_array(np.array([SEQ, -1, 2 * HIDDEN], np.int64), "merged"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["t", "lstm_w", "lstm_r", "lstm_b"], ["ly"], name="lstm", hidden_size=HIDDEN,
                         direction="bidirectional"),
        helper.make_node("Transpose", ["ly"], ["lt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["lt", "merged"], ["lr"]),
        helper.make_node("GRU", ["lr", "gru_w", "gru_r"], ["gy"], name="gru", hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["gy", "axis1"], ["gs"]),
        helper.make_node("MatMul", ["gs", "head"], ["y"], name="head_matmul"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "recurrent",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", SEQ, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SEQ, "n", CLASSES])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recurrent")
    path = _recurrent_model(folder / "recurrent.onnx")
    np.savez(folder / "calib.npz", x=np.random.default_rng(1).standard_normal((16, SEQ, FEATURES)).astype(np.float32))
    return path


def _outputs(path: Path) -> np.ndarray:
    x = np.random.default_rng(2).standard_normal((4, SEQ, FEATURES)).astype(np.float32)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def _optimized(path: Path, tmp_path: Path) -> list[onnx.NodeProto]:
    """The nodes of the graph onnxruntime runs after its session-start optimizations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return list(onnx.load(tmp_path / "optimized.onnx").graph.node)


def _decoders_folded(nodes: list[onnx.NodeProto]) -> bool:
    """No node left reading a stored int8 recurrent weight (its decoder was folded into a float initializer)."""
    return not any(name.endswith("_int8") or "_int8_cluster" in name for node in nodes for name in node.input)


@pytest.mark.parametrize("mode", ["static", "dynamic", "weight_only"])
def test_quantize_stores_recurrent_weights_as_int8_that_onnxruntime_decodes_at_start(model, tmp_path, mode):
    out = tmp_path / f"{mode}.onnx"
    report = onnxopt.optimize(
        model, out, passes=[f"quantize:mode={mode}"], data=model.with_name("calib.npz"), gates=LOOSE
    )
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert (
        stats["recurrent_int8_weights"] == 4
        and "weights_left_float" not in stats
        or set(stats["weights_left_float"]) == {"head"}
    )
    weights = _initializers(out)
    for name in ("lstm_w", "lstm_r", "gru_w", "gru_r"):
        assert name not in weights and weights[f"{name}_int8"].dtype == np.int8
        rows = weights[f"{name}_int8"].reshape(-1, weights[f"{name}_int8"].shape[-1])
        assert np.all(np.abs(rows).max(axis=1) == 127)  # one scale per gate row of each direction
    nodes = _optimized(out, tmp_path)
    assert {"LSTM", "GRU"} <= {n.op_type for n in nodes} and _decoders_folded(nodes)  # float kernels on decoded weights
    assert _cosine(_outputs(out), _outputs(model)) > 0.99


def test_static_quantize_with_dynamic_lstm_runs_onnxruntimes_integer_lstm(model, tmp_path):
    out = tmp_path / "static.onnx"
    report = onnxopt.optimize(model, out, passes=["quantize:recurrent=dynamic_lstm"], data=model.with_name("calib.npz"))
    assert report.exit_code == 0, report.message
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops and "GRU" in ops
    stats = report.steps[0].stats
    assert stats["lstm_dynamic_int8"] == 1 and stats["recurrent_int8_weights"] == 2  # the GRU: no integer kernel
    assert "weights_left_float" not in stats
    assert _cosine(_outputs(out), _outputs(model)) > 0.99


def test_recurrent_weights_left_float_are_reported_with_their_reason(model, tmp_path):
    report = onnxopt.optimize(
        model, tmp_path / "float.onnx", passes=["quantize:recurrent=float"], data=model.with_name("calib.npz")
    )
    assert report.exit_code == 0, report.message
    left = report.steps[0].stats["weights_left_float"]
    assert left == {
        name: f"{name.split('_')[0].upper()}: recurrent=float" for name in ("lstm_w", "lstm_r", "gru_w", "gru_r")
    }
    report = onnxopt.optimize(model, tmp_path / "excluded.onnx", passes=[("quantize", {"exclude_nodes": ["lstm"]})],
                              data=model.with_name("calib.npz"))  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[0].stats["weights_left_float"] == {
        "lstm_r": "LSTM: exclude_nodes",
        "lstm_w": "LSTM: exclude_nodes",
    }
    assert report.steps[0].stats["recurrent_int8_weights"] == 2


def test_cluster_shares_recurrent_weights_and_lists_the_small_head(model, tmp_path):
    out = tmp_path / "cluster.onnx"
    report = onnxopt.optimize(model, out, passes=["cluster:k=8,encoding=snap"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert set(stats["tensors"]) == {"lstm_w", "lstm_r", "gru_w", "gru_r"}
    weights = _initializers(out)
    assert all(np.unique(weights[name]).size <= 8 for name in stats["tensors"])
    assert np.unique(weights["lstm_b"]).size > 8  # biases stay exact
    assert stats["weights_left_alone"] == {"head": "MatMul: 320 values < min_elements"}


def _channel_values(weight: np.ndarray) -> set[int]:
    """Distinct values in each gate row of each direction."""
    return {np.unique(row).size for row in weight.reshape(-1, weight.shape[-1])}


def test_binarize_keeps_exactly_two_values_per_channel_in_one_bit(model, tmp_path):
    snapped, binary, four = tmp_path / "snap.onnx", tmp_path / "binary.onnx", tmp_path / "four.onnx"
    report = onnxopt.optimize(model, snapped, passes=["cluster:binarize=true,encoding=snap"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    weights, originals = _initializers(snapped), _initializers(model)
    for name in ("lstm_w", "lstm_r", "gru_w", "gru_r"):
        assert _channel_values(weights[name]) == {2}, name
        rows = weights[name].reshape(-1, weights[name].shape[-1])
        original = originals[name].reshape(rows.shape)
        assert np.array_equal(np.sign(rows), np.where(original >= 0, 1, -1))  # a sign per weight
        assert np.allclose(rows.max(axis=1), np.abs(original).mean(axis=1))  # and the channel's mean |w|
    assert onnxopt.optimize(model, binary, passes=["cluster:binarize=true"], gates=LOOSE).exit_code == 0
    assert onnxopt.optimize(model, four, passes=["cluster:per_channel=true"], gates=LOOSE).exit_code == 0
    assert np.allclose(_outputs(binary), _outputs(snapped), atol=1e-5)  # the 1-bit decoder gives the same weights
    assert binary.stat().st_size < 0.6 * four.stat().st_size


@pytest.mark.parametrize("shape", [(2, 64, 24), (1, 5, 13)])  # whole bytes, and 65 bits: padding sliced off
def test_packed_bits_decode_in_onnxruntime(tmp_path, shape):
    import onnx_ir as ir

    from onnxopt_plugins.cluster.encode import encode, storage

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=shape)
    codebook = np.array([-0.5, 0.25], np.float32)
    value = ir.Value(name="w", const_value=ir.tensor(codebook[labels]))
    value.type, value.shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape(shape)
    out = ir.node("Identity", inputs=[value])
    out.outputs[0].name, out.outputs[0].type, out.outputs[0].shape = "y", value.type, value.shape
    graph = ir.Graph([], [out.outputs[0]], nodes=[out], initializers=[value], opset_imports={"": 17})
    assert storage(codebook[None], labels.size, 4, 17) == ("packed1" if labels.size >= 1024 else "snap")
    encode(value, codebook, labels, None, "packed1")
    path = tmp_path / "bits.onnx"
    ir.save(ir.Model(graph, ir_version=8), path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {})[0]
    assert np.array_equal(got, codebook[labels])


@pytest.mark.parametrize("per_channel", [False, True])
def test_cluster_after_quantize_stores_the_int8_recurrent_weights_in_four_bits(model, tmp_path, per_channel):
    out = tmp_path / "int8_4bit.onnx"
    report = onnxopt.optimize(model, out, passes=["quantize", f"cluster:per_channel={per_channel}"],
                              data=model.with_name("calib.npz"), gates=LOOSE)  # fmt: skip
    assert report.exit_code == 0, report.message
    tensors, weights = report.steps[1].stats["tensors"], _initializers(out)
    for name in ("lstm_w_int8", "lstm_r_int8", "gru_w_int8", "gru_r_int8"):
        assert tensors[name]["unique"] <= 16 or per_channel
        if tensors[name]["stored"] == "snap":  # per row, the codebooks can outweigh a short weight's indices
            assert per_channel and max(_channel_values(weights[name])) <= 16
        else:
            assert tensors[name]["stored"] in ("packed4", "uint4") and name not in weights
    assert _decoders_folded(_optimized(out, tmp_path))
    assert _cosine(_outputs(out), _outputs(model)) > 0.9


def test_left_alone_names_constant_node_weights_and_caps_the_list(tmp_path):
    rng = np.random.default_rng(7)
    nodes, inits, previous = [], [], "x"
    for index in range(10):  # ten 8x8 weights: under min_elements
        inits.append(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{index}"], [f"h{index}"]))
        previous = f"h{index}"
    big = numpy_helper.from_array(rng.standard_normal((8, 256)).astype(np.float32), "big")
    nodes += [
        helper.make_node("Constant", [], ["big_w"], value=big),
        helper.make_node("MatMul", [previous, "big_w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256])], inits)  # fmt: skip
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    report = onnxopt.optimize(path, tmp_path / "out.onnx", passes=["cluster"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    left = report.steps[0].stats["weights_left_alone"]
    assert list(left)[0] == "big_w" and "held in a Constant node" in left["big_w"]
    assert len(left) == 9 and left["..."] == "3 more (192 values)"
    assert left["w0"] == "MatMul: 64 values < min_elements"


def test_magnitude_prune_names_the_recurrent_and_small_weights_it_leaves(model, tmp_path):
    report = onnxopt.optimize(model, tmp_path / "pruned.onnx", passes=["prune"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    left = report.steps[0].stats["weights_left_alone"]
    assert set(left) == {"lstm_w", "lstm_r", "gru_w", "gru_r", "head"}
    assert (
        left["gru_r"].startswith("GRU: magnitude pruning covers")
        and left["head"] == "MatMul: 320 values < min_elements"
    )


def test_weight_only_reaches_gemm_weights_and_names_the_conv_it_cannot(tmp_path):
    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "gemm_w"),
             numpy_helper.from_array(np.array([-1, 2, 4, 4], np.int64), "image")]  # fmt: skip
    nodes = [helper.make_node("Reshape", ["x", "image"], ["i"]),
             helper.make_node("Conv", ["i", "conv_w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Gemm", ["f", "gemm_w"], ["y"], transB=1, name="gemm")]  # fmt: skip
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])], inits)  # fmt: skip
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    out = tmp_path / "weight_only.onnx"
    report = onnxopt.optimize(path, out, passes=["quantize:mode=weight_only,fold_first=false"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    assert "MatMulNBits" in [n.op_type for n in onnx.load(out).graph.node]  # the Gemm, rewritten as MatMul (+ Add)
    conv = "Conv: onnxruntime's weight_only quantizer does not quantize Conv"
    assert report.steps[0].stats["weights_left_float"] == {"conv_w": conv}
    options = {"mode": "weight_only", "fold_first": False, "exclude_nodes": ["gemm"]}
    report = onnxopt.optimize(path, tmp_path / "excluded.onnx", passes=[("quantize", options)], gates=LOOSE)
    assert report.exit_code == 0, report.message
    left = report.steps[0].stats["weights_left_float"]  # the Gemm's weight, transposed, under a generated name
    assert left["conv_w"] == conv and sorted(left.values()) == sorted([conv, "MatMul: exclude_nodes"])


def test_lstm_weights_inside_if_branches_are_stored_as_int8_too(tmp_path):
    rng = np.random.default_rng(9)

    def branch(name: str) -> onnx.GraphProto:
        inits = [numpy_helper.from_array((rng.standard_normal((1, 64, 8)) / 3).astype(np.float32), f"{name}_w"),
                 numpy_helper.from_array((rng.standard_normal((1, 64, 16)) / 4).astype(np.float32),
                                         f"{name}_r")]  # fmt: skip
        node = helper.make_node(
            "LSTM", ["x", f"{name}_w", f"{name}_r"], [f"{name}_y"], hidden_size=16, name=f"{name}_lstm"
        )
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [SEQ, 1, 1, 16])
        return helper.make_graph([node], name, [], [out], inits)

    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))
    graph = helper.make_graph([node], "if_lstm", [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                                  helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, 1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SEQ, 1, 1, 16])])  # fmt: skip
    path, out = tmp_path / "if_lstm.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    report = onnxopt.optimize(path, out, passes=["quantize:mode=dynamic"], gates=LOOSE)
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert stats["recurrent_int8_weights"] == 4 and "weights_left_float" not in stats
    x = rng.standard_normal((SEQ, 1, 8)).astype(np.float32)
    for cond in (True, False):
        feed = {"cond": np.array(cond), "x": x}
        ref, got = (
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0] for p in (path, out)
        )
        assert _cosine(ref, got) > 0.999
    assert out.stat().st_size < 0.5 * path.stat().st_size


def test_weights_in_if_branches_and_the_condition_are_reported_by_their_own_names(fixtures_dir, tmp_path):
    report = onnxopt.optimize(
        fixtures_dir / "if_model.onnx", tmp_path / "dynamic.onnx", passes=["quantize:mode=dynamic"], gates=LOOSE
    )
    assert report.exit_code == 0, report.message
    left = report.steps[0].stats["weights_left_float"]  # the quantizer's transposed copies keep a readable name
    assert left and all(
        name.startswith("fc2.weight") and why == "MatMul: inside an If / Loop / Scan body" for name, why in left.items()
    )
    report = onnxopt.optimize(fixtures_dir / "if_model.onnx", tmp_path / "static.onnx", passes=["quantize"],
                              data=fixtures_dir / "if_model_calib.npz", gates=LOOSE)  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[0].stats["weights_left_float"] == {
        "fc1.weight": "Gemm: computes an If / Loop condition",
        "fc2.weight": "Gemm: inside an If / Loop / Scan body",
    }
