"""The quantize pass on fixture models and on small models built to show what a plain onnxruntime call gets wrong."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxopt
from onnxopt.errors import UsageError


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_static_int8_digits_keeps_accuracy(fixtures_dir, tmp_path):
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=["fold", "quantize"],
                              data=fixtures_dir / "digits_cnn_calib.npz",
                              gates={"max_accuracy_drop": 0.01})  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[1].status == "kept"
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(_ops(out))
    assert report.final.accuracy_candidate >= report.final.accuracy_reference - 0.01
    assert report.steps[1].stats["calibration_samples"] == 100
    # every layer runs an int8 kernel in onnxruntime: the Gemm too (a weight DequantizeLinear without its zero
    # point kept onnxruntime from fusing QGemm, so the classifier ran in float)
    fused = _onnxruntime_optimized_ops(out, tmp_path / "ort.onnx")
    assert fused.count("QLinearConv") == 2 and "QGemm" in fused and "Gemm" not in fused and "Conv" not in fused


@pytest.mark.parametrize(("method", "max_drop"), [("entropy", 0.01), ("percentile", 0.01), ("distribution", 0.05)])
def test_histogram_calibration_takes_a_last_batch_smaller_than_the_others(fixtures_dir, tmp_path, method, max_drop):
    """digits' 100 calibration rows in batches of 32 end with 4: onnxruntime's histogram collector stacked the
    feeds with np.asarray and raised (its issue 18792); the pass flattens them first and calibrates (distribution,
    onnxruntime's method for float8 ranges, costs int8 digits 3.5 points of validation accuracy, the others 0)."""
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=["fold", f"quantize:method={method}"],
                              data=fixtures_dir / "digits_cnn_calib.npz", val=fixtures_dir / "digits_cnn_val.npz",
                              batch_size=32, gates={"max_accuracy_drop": max_drop, "min_cosine": 0,
                                                    "min_channel_cosine": 0})  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[1].status == "kept" and report.steps[1].stats["calibration_samples"] == 100
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(_ops(out))


def test_flattened_feeds_give_the_histogram_onnxruntime_gives_where_the_shapes_agree():
    """The workaround changes no figure where onnxruntime's own stacking works: equal-shaped feeds give the same
    histograms, ranges and thresholds through it as without it; feeds of two shapes go through it only."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from onnxopt_plugins.quantize.ort_quantizer import histograms_of_any_shape

    rng = np.random.default_rng(0)
    equal = {"t": [rng.standard_normal((4, 3, 5)).astype(np.float32) for _ in range(3)]}
    for method in ("entropy", "percentile", "distribution"):
        collectors = [HistogramCollector(method, True, 128, 16, 99.9, "same") for _ in range(3)]
        collectors[0].collect(equal)
        with histograms_of_any_shape():
            collectors[1].collect(equal)
            collectors[2].collect({"t": [rng.standard_normal((4, 3, 5)).astype(np.float32),
                                         rng.standard_normal((1, 3, 7)).astype(np.float32)]})  # fmt: skip
        plain, flat = (c.get_histogram_dict()["t"] for c in collectors[:2])
        assert all(np.array_equal(a, b) for a, b in zip(plain, flat)), method
        assert collectors[2].get_histogram_dict()["t"][0].sum() == 4 * 3 * 5 + 3 * 7
    assert HistogramCollector.collect.__name__ == "collect"  # put back when the block ends
    with pytest.raises(ValueError, match="inhomogeneous"):
        HistogramCollector("percentile", True, 128, 16, 99.9, "same").collect(
            {"t": [np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)]}
        )


def test_dynamic_int8_transformer(fixtures_dir, tmp_path):
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", out, passes=["quantize:mode=dynamic"],
                              data=fixtures_dir / "tiny_transformer_val.npz", gates={"min_cosine": 0.99})  # fmt: skip
    assert report.exit_code == 0, report.message
    assert "DynamicQuantizeLinear" in _ops(out) and "MatMulInteger" in _ops(out)


def _embedding_model(path: Path, vocab: int = 512, dim: int = 64) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32) / 8, "w"),
    ]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]), helper.make_node("MatMul", ["emb", "w"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, dim])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_weight_only_4bit_quantizes_matmul_and_the_embedding_table(tmp_path):
    source = _embedding_model(tmp_path / "emb.onnx")
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(
        source, out, passes=["quantize:mode=weight_only,block_size=32"], gates={"min_cosine": 0.97}
    )
    assert report.exit_code == 0, report.message
    ops = _ops(out)
    assert "MatMulNBits" in ops and "GatherBlockQuantized" in ops
    assert out.stat().st_size < 0.25 * source.stat().st_size  # the table is quantized too, not left float
    assert report.steps[0].stats["opset_upgraded"] == "17 -> 21"
    mixed = onnxopt.optimize(source, tmp_path / "mixed.onnx", passes=["quantize:mode=weight_only,eight_bit_regex=."],
                             gates={"min_cosine": 0.99})  # fmt: skip
    assert mixed.exit_code == 0, mixed.message
    nodes = onnx.load(tmp_path / "mixed.onnx").graph.node
    bits = {n.op_type: helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "bits"}
    assert bits["MatMulNBits"] == 8 and bits.get("GatherBlockQuantized", 4) == 4  # the table stays 4-bit
    assert mixed.steps[0].stats["eight_bit_nodes"] == 1


def test_weight_only_8bit_leaves_the_embedding_table_float_without_errors(tmp_path, caplog):
    # onnxruntime block-quantizes Gather to 4 bits only and logs an ERROR per table when asked for 8
    source, out = _embedding_model(tmp_path / "emb.onnx"), tmp_path / "q8.onnx"
    with caplog.at_level(logging.WARNING):
        report = onnxopt.optimize(source, out, passes=["quantize:mode=weight_only,bits=8"], gates={"min_cosine": 0.99})
    assert report.exit_code == 0, report.message
    assert "MatMulNBits" in _ops(out) and "GatherBlockQuantized" not in _ops(out) and "Gather" in _ops(out)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def _conv_model(path: Path, opset: int) -> Path:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


def test_per_channel_static_on_opset_12_upgrades_instead_of_writing_a_model_that_cannot_load(tmp_path):
    source = _conv_model(tmp_path / "conv12.onnx", 12)
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(source, out, passes=["quantize"], data=data)
    assert report.exit_code == 0, report.message
    assert report.steps[0].stats["opset_upgraded"] == "12 -> 13"
    assert "DequantizeLinear" in _ops(out)
    _run(out, {"x": np.zeros((1, 3, 8, 8), np.float32)})  # it loads and runs


def test_if_model_quantizes_without_changing_which_branch_runs(fixtures_dir, tmp_path):
    for mode in ("static", "dynamic"):
        out = tmp_path / f"{mode}.onnx"
        report = onnxopt.optimize(fixtures_dir / "if_model.onnx", out, passes=[f"quantize:mode={mode}"],
                                  data=fixtures_dir / "if_model_calib.npz", gates={"min_cosine": 0.999})  # fmt: skip
        assert report.exit_code == 0, report.message
        assert report.steps[0].stats["condition_nodes_kept_float"] >= 5
        for row in np.load(fixtures_dir / "if_model_val.npz")["input"]:
            want = _run(fixtures_dir / "if_model.onnx", {"input": row[None]})[0]
            assert np.argmax(_run(out, {"input": row[None]})[0]) == np.argmax(want)


def _detector(path: Path) -> Path:
    """Boxes in the hundreds beside class scores in 0..1, concatenated on the channel axis: one shared scale."""
    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 50, "wb"),
        numpy_helper.from_array(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), "wc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wb"], ["boxes"]),
        helper.make_node("Conv", ["x", "wc"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 16, 16])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_output_concat_stays_float_so_class_scores_survive(tmp_path):
    source = _detector(tmp_path / "det.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(5).standard_normal((8, 1, 8, 16, 16)).astype(np.float32))
    results = {}
    for keep in (True, False):
        out = tmp_path / f"q_{keep}.onnx"
        report = onnxopt.optimize(source, out, passes=[f"quantize:float_output_concat={keep}"], data=data,
                                  gates={"min_cosine": 0.0, "min_channel_cosine": 0.0})  # fmt: skip
        results[keep] = report.final.outputs[0].worst_channel_cosine
        if keep:
            assert report.steps[0].stats["output_concat_kept_float"]
    assert results[True] > 0.99 and results[True] > results[False]


def test_synthetic_calibration_is_reported_loudly(fixtures_dir, tmp_path):
    report = onnxopt.optimize(
        fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["quantize"], data="synthetic:16"
    )
    assert "random inputs" in report.steps[0].stats["warning"]


def test_accuracy_aware_loop_keeps_searching_within_budget_and_always_writes(fixtures_dir, tmp_path):
    out = tmp_path / "q.onnx"
    val = fixtures_dir / "tiny_transformer_val.npz"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", out,
                              passes=[f"quantize:accuracy_aware=true,max_trials=3,candidates=4,validation_data={val}"],
                              data=fixtures_dir / "tiny_transformer_calib.npz",
                              gates={"min_cosine": 0.999999})  # fmt: skip
    stats = report.steps[0].stats
    assert len(stats["trials"]) == 4 and stats["gates_met"] is False
    assert stats["ranked_by_output"] == 4 and stats["judged_on"].endswith("tiny_transformer_val.npz")
    assert 1 <= len(stats["kept_float_by_search"]) <= 3  # the best trial's nodes, each with its reason
    assert all("only this node quantized" in reason for reason in stats["kept_float_by_search"].values())
    assert report.exit_code == 1 and out.exists()  # the float model is kept, never nothing
    easy = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", tmp_path / "easy.onnx",
                            passes=["quantize:accuracy_aware=true"], data=fixtures_dir / "tiny_transformer_calib.npz",
                            gates={"min_cosine": 0.99})  # fmt: skip
    assert easy.exit_code == 0 and easy.steps[0].stats["trials"][0]["passed"]


def test_static_without_data_fails_before_any_work_but_dynamic_needs_none(fixtures_dir, tmp_path):
    with pytest.raises(UsageError, match="needs data"):
        onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["fold", "quantize"])
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["quantize:mode=dynamic"])
    assert report.exit_code == 0, report.message
    with pytest.raises(UsageError, match="expected one of static, dynamic, weight_only"):
        onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["quantize:mode=int3"])


def test_failing_preprocessing_falls_back_and_says_so(tmp_path):
    from onnxopt_plugins.quantize import ort_quantizer

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    stats: dict = {}
    assert ort_quantizer.preprocess(broken, tmp_path / "pre.onnx", stats) == broken
    assert stats["preprocess"].startswith("skipped: quant_pre_process failed")


def test_external_data_models_stay_external(tmp_path):
    source = tmp_path / "ext.onnx"
    onnx.save(onnx.load(_embedding_model(tmp_path / "emb.onnx")), source, save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)  # fmt: skip
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(source, out, passes=["quantize:mode=dynamic"])
    assert report.exit_code == 0, report.message
    assert (tmp_path / "q.onnx.data").exists()
    assert any(
        t.data_location == TensorProto.EXTERNAL for t in onnx.load(out, load_external_data=False).graph.initializer
    )


def test_calibration_uses_every_feed_when_there_are_sixteen(fixtures_dir, tmp_path):
    """onnxruntime 1.32's CalibMaxIntermediateOutputs=16 dropped every full group of 16 feeds: not used."""
    data = tmp_path / "calib.npz"
    calib = np.load(fixtures_dir / "digits_cnn_calib.npz")
    np.savez(data, input=calib["input"][:32], labels=calib["labels"][:32])
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["quantize"], data=data,
                              batch_size=2, gates={"max_accuracy_drop": 0.02})  # 16 feeds of 2 rows  # fmt: skip
    assert report.exit_code == 0, report.message
    assert report.steps[0].stats["calibration_samples"] == 32
    assert report.steps[0].stats["folded_first"]["batchnorm_fused"] == 2


def _hardswish_layernorm_model(path: Path) -> Path:
    """Conv, a hard-swish ending in "/ 6", then a layer norm written out op by op (as opset < 17 exports do)."""
    rng = np.random.default_rng(6)
    consts = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32),
              "three": np.array(3, np.float32), "six": np.array(6, np.float32), "two": np.array(2, np.float32),
              "eps": np.array(1e-5, np.float32), "gamma": rng.standard_normal(8).astype(np.float32),
              "beta": rng.standard_normal(8).astype(np.float32), "zero": np.array(0, np.float32)}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "three"], ["c3"]),
        helper.make_node("Clip", ["c3", "zero", "six"], ["relu6"]),
        helper.make_node("Mul", ["c", "relu6"], ["hs6"]),
        helper.make_node("Div", ["hs6", "six"], ["hs"]),
        helper.make_node("Transpose", ["hs"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("ReduceMean", ["t"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["t", "mean"], ["centred"]),
        helper.make_node("Pow", ["centred", "two"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "beta"], ["ln"]),
        helper.make_node("MatMul", ["ln", "w2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w2"))
    graph = helper.make_graph(
        nodes,
        "hs_ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_constant_division_quantizes_and_written_out_layer_norm_stays_fusable(tmp_path):
    source = _hardswish_layernorm_model(tmp_path / "hs_ln.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(7).standard_normal((32, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    report = onnxopt.optimize(source, out, passes=["quantize"], data=data, gates={"min_cosine": 0.98})
    assert report.exit_code == 0, report.message
    stats = report.steps[0].stats
    assert stats["divisions_to_multiplications"] == 1 and stats["layer_norm_nodes_kept_float"] == 9
    proto = onnx.load(out)
    assert [n.input[1] for n in proto.graph.node if n.op_type == "Div"] == ["std"]  # only the layer norm's
    named = {n.op_type: n.name for n in proto.graph.node}
    assert named["Conv"].startswith("q") and named["Sqrt"].startswith("node_")  # the layer norm's, as reported
    signed = {t.name for t in proto.graph.initializer if t.data_type in (TensorProto.INT8, TensorProto.INT32)}
    weight_dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in signed]
    assert len(weight_dqs) == 2 and all(len(n.input) == 2 for n in weight_dqs)  # all-zero zero points dropped
    floats = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT}
    assert next(n for n in proto.graph.node if n.op_type == "Conv").input[2] in floats  # onnxruntime quantizes it
    assert not proto.graph.value_info
    fused = _onnxruntime_optimized_ops(out, tmp_path / "ort.onnx")
    assert any(op.endswith("LayerNormalization") for op in fused)  # fused as in the float model
    assert "QLinearConv" in fused and "Div" not in fused
    plain = onnxopt.optimize(source, tmp_path / "plain.onnx", passes=["quantize:float_layer_norm=false"], data=data,
                             gates={"min_cosine": 0.0})  # fmt: skip
    assert plain.exit_code == 0, plain.message
    unfused = _onnxruntime_optimized_ops(tmp_path / "plain.onnx", tmp_path / "ort_plain.onnx")
    assert not any(op.endswith("LayerNormalization") for op in unfused) and "Sqrt" in unfused


def _onnxruntime_optimized_ops(path: Path, optimized: Path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(optimized).graph.node]


def test_per_channel_for_conv_and_optionally_per_tensor_for_matmul(tmp_path):
    source = _hardswish_layernorm_model(tmp_path / "hs_ln.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(8).standard_normal((16, 3, 8, 8)).astype(np.float32))
    scales = {}
    for per_channel_matmul in (True, False):
        out = tmp_path / f"q_{per_channel_matmul}.onnx"
        report = onnxopt.optimize(source, out, passes=[f"quantize:per_channel_matmul={per_channel_matmul}"], data=data,
                                  gates={"min_cosine": 0.98})  # fmt: skip
        assert report.exit_code == 0, report.message
        graph = onnx.load(out).graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        producers = {o: n for n in graph.node for o in n.output}
        for node in graph.node:
            if node.op_type in ("Conv", "MatMul"):
                scales[node.op_type, per_channel_matmul] = inits[producers[node.input[1]].input[1]].size
    assert scales["Conv", True] == scales["Conv", False] == 8
    assert scales["MatMul", True] == 8 and scales["MatMul", False] == 1


def test_calibration_reads_exactly_the_first_calibration_samples_rows(fixtures_dir, tmp_path):
    """The calibration_samples stat against the feeds onnxruntime's calibrator really pulled (issue 20): the
    reader trims the last batch to the cap, and a capped run quantizes exactly like a run given only those rows."""
    from onnxopt import model_io
    from onnxopt.context import RunContext
    from onnxopt.data import from_arrays
    from onnxopt_plugins.quantize.ort_quantizer import DatasetReader

    calib = np.load(fixtures_dir / "digits_cnn_calib.npz")["input"]
    model = model_io.load(fixtures_dir / "digits_cnn.onnx")
    reader = DatasetReader(from_arrays("calib", {"input": calib[:32]}, model, batch_size=2), 5,
                           RunContext(None, tmp_path, quiet=True), {"input"})  # fmt: skip
    feeds = list(reader)
    assert [len(feed["input"]) for feed in feeds] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([feed["input"] for feed in feeds]), calib[:5])
    assert reader.get_next() is None  # exhausted: the calibrator gets nothing past the cap

    loose = {"min_cosine": 0.0, "min_channel_cosine": -1.0}
    np.savez(tmp_path / "all.npz", input=calib[:32])
    np.savez(tmp_path / "five.npz", input=calib[:5])
    capped = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "capped.onnx",
                              passes=["quantize:calibration_samples=5"], data=tmp_path / "all.npz", batch_size=2,
                              gates=loose, latency_runs=0)  # fmt: skip
    alone = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "alone.onnx", passes=["quantize"],
                             data=tmp_path / "five.npz", batch_size=2, gates=loose, latency_runs=0)  # fmt: skip
    assert capped.exit_code == alone.exit_code == 0, capped.message or alone.message
    assert capped.steps[0].stats["calibration_samples"] == alone.steps[0].stats["calibration_samples"] == 5
    arrays = lambda path: {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}  # noqa: E731
    capped_arrays, alone_arrays = arrays(tmp_path / "capped.onnx"), arrays(tmp_path / "alone.onnx")
    assert capped_arrays.keys() == alone_arrays.keys()  # activation scales and zero points included
    for name, value in capped_arrays.items():
        np.testing.assert_array_equal(value, alone_arrays[name], err_msg=name)
    everything = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "all.onnx", passes=["quantize"],
                                  data=tmp_path / "all.npz", batch_size=2, gates=loose, latency_runs=0)  # fmt: skip
    assert everything.steps[0].stats["calibration_samples"] == 32
    assert any(
        not np.array_equal(v, capped_arrays[k]) for k, v in arrays(tmp_path / "all.onnx").items()
    )  # the cap mattered


# --- one pass per way of quantizing (issue 17): quantize, quantize-accuracy-aware, quantize-dynamic,
# quantize-weight-only; the old `quantize:mode=...` spelling routes to them


def _registry():
    from onnxopt.session import Session

    return Session().passes


@pytest.mark.parametrize(("old", "new", "calibrated"), [
    ("quantize:mode=static", "quantize", True),
    ("quantize:accuracy_aware=true,max_trials=1,candidates=2",
     "quantize-accuracy-aware:max_trials=1,candidates=2", True),
    ("quantize:mode=static,accuracy_aware=true,max_trials=1,candidates=2",
     "quantize-accuracy-aware:max_trials=1,candidates=2", True),
    ("quantize:mode=dynamic", "quantize-dynamic", False),
    ("quantize:mode=weight_only,block_size=16", "quantize-weight-only:block_size=16", False),
])  # fmt: skip
def test_each_pass_gives_the_model_its_old_spelling_gave(fixtures_dir, tmp_path, caplog, old, new, calibrated):
    data = fixtures_dir / "digits_cnn_calib.npz" if calibrated else None
    outputs = []
    for index, spelling in enumerate((old, new)):
        out = tmp_path / f"{index}.onnx"
        report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", out, passes=[spelling], data=data, latency_runs=0)
        assert report.exit_code == 0, report.message
        assert report.steps[0].name.partition(":")[0] == new.partition(":")[0]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert f"is now the pass '{new.partition(':')[0]}'" in caplog.text or old == "quantize:mode=static"


def test_an_option_of_another_pass_is_refused_naming_the_valid_ones():
    registry = _registry()
    with pytest.raises(UsageError, match=r"pass 'quantize-dynamic' has no option 'bits' \(valid options: .*streaming"):
        registry.configure("quantize-dynamic", {"bits": "4"})
    for name, foreign in [("quantize", "max_trials"), ("quantize", "streaming"), ("quantize-weight-only", "method"),
                          ("quantize-weight-only", "per_channel"),
                          ("quantize-dynamic", "calibration_samples")]:  # fmt: skip
        with pytest.raises(UsageError, match=f"pass '{name}' has no option '{foreign}'"):
            registry.configure(name, {foreign: "1"})
    with pytest.raises(UsageError, match="expected one of int8_weights, float"):  # no integer LSTM in weight-only
        registry.configure("quantize", {"mode": "weight_only", "recurrent": "dynamic_lstm"})
    assert registry.configure("quantize-dynamic", {"recurrent": "dynamic_lstm"}).options.recurrent == "dynamic_lstm"


def test_old_spellings_route_to_the_pass_and_static_defaults_stay_static():
    registry = _registry()
    assert registry.configure("quantize", {"accuracy_aware": "false", "method": "entropy"}).spec.name == "quantize"
    routed = registry.configure("quantize", {"mode": "static", "accuracy_aware": "true", "step": "2"})
    assert routed.spec.name == "quantize-accuracy-aware" and routed.options.step == 2
    assert registry.configure("quantize", {"mode": "weight_only", "bits": "8"}).options.bits == 8
    from onnxopt_plugins.quantize import QuantizeOptions

    with pytest.raises(ValueError, match="mode=weight_only is the pass quantize-weight-only"):
        QuantizeOptions(mode="weight_only")


def test_only_the_calibrated_passes_need_data():
    registry = _registry()
    needs = {name: registry.get(name).requires_data(registry.get(name).options()) for name in
             ("quantize", "quantize-accuracy-aware", "quantize-dynamic", "quantize-weight-only")}  # fmt: skip
    assert needs == {"quantize": True, "quantize-accuracy-aware": True, "quantize-dynamic": False,
                     "quantize-weight-only": False}  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "ok"), [
    ("quantize", {"calibration_samples": "1"}, True), ("quantize", {"calibration_samples": "0"}, False),
    ("quantize-accuracy-aware", {"max_trials": "1", "step": "1", "candidates": "1"}, True),
    ("quantize-accuracy-aware", {"max_trials": "0"}, False), ("quantize-accuracy-aware", {"step": "0"}, False),
    ("quantize-accuracy-aware", {"candidates": "0"}, False),
    ("quantize-accuracy-aware", {"max_time": "0.001"}, True), ("quantize-accuracy-aware", {"max_time": "0"}, False),
    ("quantize-weight-only", {"block_size": "16"}, True), ("quantize-weight-only", {"block_size": "8"}, False),
    ("quantize-weight-only", {"block_size": "48"}, False),
    ("quantize-weight-only", {"eight_bit_regex": "attn"}, True),
    ("quantize-weight-only", {"eight_bit_regex": "("}, False),
    ("quantize-dynamic", {"exclude_regex": "["}, False),
    ("quantize-dynamic", {"streaming": "on", "op_types": "MatMul"}, True),
    ("quantize-dynamic", {"streaming": "on", "op_types": "Conv"}, False),
])  # fmt: skip
def test_option_ranges_and_checks_hold_on_both_sides(name, raw, ok):
    spec = _registry().get(name)
    if ok:
        spec.parse_options(raw)
    else:
        with pytest.raises(UsageError, match=f"pass '{name}': "):
            spec.parse_options(raw)


def test_importing_the_plugin_loads_no_heavy_module():
    """The CLI loads every plugin before parsing: the quantize plugin registers without numpy, onnx or onnxruntime."""
    import subprocess
    import sys

    code = ("import sys, onnxopt_plugins.quantize as q; q.onnxopt_register_passes(lambda spec: None); "
            "print(sorted(m for m in ('numpy', 'onnx', 'onnx_ir', 'onnxruntime') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _Trial:
    """optuna's trial as the search space asks it: ``params`` where given, else each dimension's first value."""

    def __init__(self, params: dict) -> None:
        self.params = params

    def suggest_categorical(self, name, choices):
        return self.params.get(name, choices[0])

    def suggest_int(self, name, low, high, step=1):
        return self.params.get(name, low)

    def suggest_float(self, name, low, high, step=None):
        return self.params.get(name, low)


def test_auto_gives_a_candidate_one_quantize_pass_and_tries_static_and_dynamic_first():
    """The four passes replaced one pass's modes: a sampled recipe holds at most one of them, as it held one mode."""
    from onnxopt.auto.search import _baselines
    from onnxopt.auto.space import build_space

    space = build_space(_registry())
    quantize = ["quantize", "quantize-accuracy-aware", "quantize-dynamic", "quantize-weight-only"]
    assert [entry.name for entry in space.passes if entry.name in quantize] == quantize
    for chosen in quantize:  # every optional pass wanted, from the chosen one on: the first quantize pass wins
        params = {entry.name: entry.name not in quantize[: quantize.index(chosen)] for entry in space.passes}
        assert [s.name for s in space.sample(_Trial(params)) if s.name in quantize] == [chosen]
    first = [[s.name for s in space.sample(_Trial(params))] for params in _baselines(space)]
    assert first[:3] == [["fold"], ["fold", "quantize"], ["fold", "quantize-dynamic"]]


@pytest.mark.parametrize("name", ["quantize", "quantize-dynamic", "quantize-weight-only"])
def test_each_quantize_pass_runs_without_fold_in_a_fresh_process(run_cli, fixtures_dir, tmp_path, name):
    """fold_first=false: nothing has imported onnx_ir.passes.common for the quantizer (fold's modules do), so
    each quantize module imports it itself (it crashed with an AttributeError on ir.passes.common)."""
    data = fixtures_dir / "digits_cnn_calib.npz"
    out = tmp_path / "q.onnx"
    run = run_cli("optimize", fixtures_dir / "digits_cnn.onnx", "-o", out, "--pass", f"{name}:fold_first=false",
                  "--data", data, "--min-cosine", "0", "--min-channel-cosine", "-1", "--latency-runs", "0",
                  "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["steps"][0]["status"] == "kept" and "folded_first" not in report["steps"][0]["stats"]


@pytest.mark.parametrize("name", ["quantize-dynamic", "quantize-weight-only"])
def test_weight_reading_quantizers_skip_quant_pre_process_by_default_and_write_the_same_model(
    fixtures_dir, tmp_path, name
):
    """The dynamic and block quantizers read weights, not shapes: quant_pre_process changes nothing they write
    (checked here on the transformer fixture), so it is off unless asked for; static keeps it on."""
    model = fixtures_dir / "tiny_transformer.onnx"
    written = {}
    for preprocess in (None, True):
        out = tmp_path / f"{preprocess}.onnx"
        spec = name if preprocess is None else f"{name}:preprocess=true"
        report = onnxopt.optimize(model, out, passes=[spec], gates={"min_cosine": 0, "min_channel_cosine": -1},
                                  latency_runs=0)  # fmt: skip
        assert report.steps[0].status == "kept", report.message
        assert ("preprocess" in report.steps[0].stats) == bool(preprocess)
        proto = onnx.load(out)
        written[preprocess] = (
            sorted((n.op_type, tuple(n.input), tuple(n.output)) for n in proto.graph.node),
            {i.name: numpy_helper.to_array(i).tobytes() for i in proto.graph.initializer},
        )
    assert written[None] == written[True]
    static = onnxopt.optimize(model, tmp_path / "s.onnx", passes=["quantize"], data=fixtures_dir /
                              "tiny_transformer_calib.npz", latency_runs=0)  # fmt: skip
    assert "preprocess" in static.steps[0].stats


def test_accuracy_aware_search_compares_on_the_run_s_own_reference_session(fixtures_dir, tmp_path, monkeypatch):
    """One onnxruntime session per model: the search's trials and the run's checks share the run's reference
    (its outputs cached per feed), so the original is opened once, however many trials are judged."""
    from onnxopt import validation

    opened = []
    real_open = validation.open_session

    def counting_open(path, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, **kwargs)

    monkeypatch.setattr(validation, "open_session", counting_open)  # every session, the pipeline's reference too
    calib = fixtures_dir / "tiny_transformer_calib.npz"
    report = onnxopt.optimize(fixtures_dir / "tiny_transformer.onnx", tmp_path / "q.onnx",
                              passes=["quantize-accuracy-aware:max_trials=3,candidates=4"], data=calib,
                              gates={"min_cosine": 0.999999}, latency_runs=0)  # fmt: skip
    assert len(report.steps[0].stats["trials"]) == 4
    assert opened.count("tiny_transformer.onnx") == 1, opened
