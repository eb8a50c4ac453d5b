"""reduce_range: 7-bit int8 weights where onnxruntime's uint8 x int8 kernels saturate (x86 without VNNI)."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

import onnxopt
from onnxopt_plugins.quantize import cpu

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"


@pytest.mark.parametrize(
    ("machine", "cpuinfo", "saturates"),
    [
        ("x86_64", AVX2, True),  # VPMADDUBSW: pairs of products summed into int16
        ("x86_64", AVX2.replace("fma", "fma avx512f avx512_vnni"), False),
        ("AMD64", AVX2.replace("fma", "fma avx_vnni"), False),
        ("x86_64", AVX2.replace("fma", "fma amx_int8"), False),
        ("x86_64", "processor\t: 0\n", True),  # flags unreadable: 7-bit weights are the safe side
        ("aarch64", AVX2, False),
    ],
)
def test_which_cpus_saturate(machine: str, cpuinfo: str, saturates: bool) -> None:
    assert cpu.int8_saturates(machine, cpuinfo) is saturates


def _weight_range(path) -> tuple[int, int]:
    model = onnx.load(str(path))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return min(int(w.min()) for w in weights), max(int(w.max()) for w in weights)


@pytest.mark.parametrize("pass_name", ["quantize-dynamic", "quantize"])
def test_reduce_range_on_keeps_weights_in_seven_bits_and_auto_follows_this_cpu(fixtures_dir, tmp_path, pass_name):
    model, data = fixtures_dir / "tiny_transformer.onnx", fixtures_dir / "tiny_transformer_val.npz"
    ranges, reduced = {}, {}
    for setting in ("on", "off", "auto"):
        out = tmp_path / f"{setting}.onnx"
        report = onnxopt.optimize(model, out, passes=[(pass_name, {"reduce_range": setting})], data=data,
                                  gates={"min_cosine": -1.0, "min_channel_cosine": -1.0})  # fmt: skip
        assert report.exit_code == 0, report.message
        ranges[setting], reduced[setting] = _weight_range(out), report.steps[-1].stats["reduce_range"]
    assert ranges["on"][0] >= -64 and ranges["on"][1] <= 64  # onnxruntime's symmetric 7-bit range
    assert ranges["off"][0] < -64 or ranges["off"][1] > 64  # symmetric int8 reaches -127 / 127
    assert reduced == {"on": True, "off": False, "auto": cpu.int8_saturates()}
    assert ranges["auto"] == ranges["on" if cpu.int8_saturates() else "off"]
