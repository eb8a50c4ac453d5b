"""Static int8 on a stack of Gemm layers: does onnxruntime run the quantized graph with its QGemm kernel?

    python bench/quantize_gemm.py [--layers 4] [--width 1024] [--rounds 30]

Builds an MLP of ``--layers`` Gemm (``width`` x ``width``, bias) + Relu layers, quantizes it with onnxopt's
``quantize`` (static, QDQ, per-channel) and with a plain ``onnxruntime.quantization.quantize_static`` on the same
random calibration rows, and prints a table: the kernels onnxruntime runs (ORT_ENABLE_ALL) and the latency
ratio against fp32 (1 intra-op thread, median of per-round ratios over interleaved shuffled rounds; the fp32 row
is a 2nd fp32 session: the noise). The last row is onnxopt's output with the weights' zero points dropped, as
onnxopt wrote it before this bench existed: onnxruntime then does not fuse QGemm and dequantizes the weights on
every run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (latency, measured as the other benches do)

from onnxopt.validation import open_session  # noqa: E402


def build(path: Path, layers: int, width: int, rng: np.random.Generator) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, x = [], [], "x"
    for i in range(layers):
        weights += [
            numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) * 0.1, f"b{i}"),
        ]
        nodes += [
            helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]),
            helper.make_node("Relu", [f"g{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "gemm_stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", width])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def ort_static(src: Path, dst: Path, rows: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({"x": rows[i : i + 16]} for i in range(0, len(rows), 16))

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)


def without_weight_zero_points(src: Path, dst: Path) -> None:
    import onnx
    from onnx import TensorProto

    proto = onnx.load(src)
    int8 = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT8}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 3 and node.input[0] in int8:
            del node.input[2]
    onnx.save(proto, dst)


def kernels(path: Path, work: Path) -> str:
    import onnx

    optimized = common.ort_optimized(path, work / f"{path.stem}.ort.onnx")
    counts = collections.Counter(n.op_type for n in onnx.load(optimized).graph.node)
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    import onnxopt

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "fp32.onnx"
        build(src, args.layers, args.width, rng)
        rows = rng.standard_normal((64, args.width)).astype(np.float32)
        np.savez(work / "calib.npz", x=rows)
        paths = {"onnxopt quantize": work / "onnxopt.onnx", "ort quantize_static": work / "ort.onnx",
                 "onnxopt quantize, weight zero points dropped": work / "no_zp.onnx"}  # fmt: skip
        report = onnxopt.optimize(src, paths["onnxopt quantize"], passes=["quantize"], data=work / "calib.npz",
                                  gates={"min_cosine": 0.0}, latency_runs=0, quiet=True)  # fmt: skip
        if report.exit_code != 0:
            raise SystemExit(report.message)
        ort_static(src, paths["ort quantize_static"], rows)
        without_weight_zero_points(paths["onnxopt quantize"], paths["onnxopt quantize, weight zero points dropped"])
        sessions = {"fp32": open_session(src, threads=1), "fp32 (2nd)": open_session(src, threads=1)}
        sessions.update({name: open_session(path, threads=1) for name, path in paths.items()})
        latency = common.measure_latency(sessions, {"x": rows[:32]}, args.rounds, seed=0)
        print(f"{args.layers} x Gemm {args.width}x{args.width} + Relu, batch 32, 1 thread; "
              f"fp32 {latency['fp32 ms']:.2f} ms "
              f"per run; medians of {args.rounds} interleaved rounds; {common.environment()}\n")  # fmt: skip
        table = [["fp32", f"({latency['fp32 (2nd)']:.3f})", kernels(src, work)]]
        table += [[name, f"{latency[name]:.3f}", kernels(path, work)] for name, path in paths.items()]
        header = ["variant", "latency ratio", "kernels onnxruntime runs (ORT_ENABLE_ALL)"]
        print(common.markdown_table(header, table, "lr"))
    print(f"\nbench took {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
