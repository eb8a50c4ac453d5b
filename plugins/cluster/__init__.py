"""cluster: k-means weight sharing (as TF-MOT offers for Keras) for any ONNX model, with a compact encoding.

Each chosen weight — the constant weight input of Conv, ConvTranspose, Gemm and MatMul or the table of a
Gather (embeddings), with at least
``min_elements`` values; biases and norm parameters are never chosen — is clustered into ``k`` centroids per
tensor or per output channel (:mod:`.kmeans`). Two encodings:

- ``snap``: the values are replaced by their centroids, dtype unchanged. The file is as large as before but
  compresses well, and int8 quantization can follow (clustered, then quantized).
- ``codebook``: the indices are stored in 4 bits when ``k <= 16`` (the uint4 type from opset 21, else two per
  byte unpacked by int64 Div / Mod from opset 13) or else in uint8, with a float codebook, decoded in the
  graph by ``Cast`` + ``Gather`` (+ ``Add`` of per-channel offsets when clustering per channel). Every input of the decoder is constant, so onnxruntime folds it at
  session start: inference runs the same float weights, the file is ~4x (uint8) to ~8x (uint4) smaller.
  Run ``fold`` before ``cluster``, not after: folding would decode the weights back into the file.

Zeros (pruned weights) stay exactly zero, as a centroid of their own. The report lists, per tensor, the
number of centroids, the relative L2 reconstruction error and the unique values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx_ir as ir

from onnxopt import PassSpec, RunContext, hookimpl, option

from .kmeans import cluster

_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "Gather": 0}  # Gather: embedding tables
UINT4_OPSET = 21  # the uint4 type and Cast from it
PACKED4_OPSET = 13  # Unsqueeze with axes as an input, for the packed-nibble decoder
#: Below this many weights the packed-nibble decoder's nodes cost more bytes than the second nibble saves.
PACKED4_MIN_ELEMENTS = 4096


@dataclass(frozen=True)
class ClusterOptions:
    k: int = option(16, "centroids per tensor (or per channel); at most 256")
    per_channel: bool = option(False, "cluster each output channel separately")
    init: Literal["kmeans++", "linear", "density"] = option("kmeans++", "centroid initialisation (TF-MOT's names)")
    encoding: Literal["codebook", "snap"] = option("codebook", "indices + codebook decoded in-graph, or values snapped to centroids")
    min_elements: int = option(1024, "tensors with fewer values are left alone")
    iterations: int = option(50, "at most this many k-means iterations")
    keep_zeros: bool = option(True, "exact zeros (pruned weights) stay zero, as a centroid of their own")

    def __post_init__(self) -> None:
        if not 2 <= self.k <= 256:
            raise ValueError("k must be between 2 and 256")
        if self.min_elements < 1 or self.iterations < 1:
            raise ValueError("min_elements and iterations must be at least 1")


def _weights(model: ir.Model, min_elements: int) -> dict[ir.Value, list[ir.Node]]:
    """Float initializers used only as the weight of Conv / ConvTranspose / Gemm / MatMul or a Gather's table."""
    found: dict[ir.Value, list[ir.Node]] = {}
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or tensor.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE):
                continue
            if tensor.size < min_elements or value.is_graph_output() or value in graph.inputs or not value.uses():
                continue
            if all(use.node.op_type in _WEIGHT_INPUT and use.idx == _WEIGHT_INPUT[use.node.op_type] for use in value.uses()):
                found[value] = [use.node for use in value.uses()]
    return found


def _channel_axis(consumers: list[ir.Node], rank: int) -> int:
    """The weight axis holding output channels: 0 for Conv, per transB for Gemm, else 1 (ConvTranspose, MatMul,
    and a Gather table's embedding dimension)."""
    node = consumers[0]
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return 1 if rank >= 2 else 0


def _index_bits(options: ClusterOptions, opset: int) -> str:
    if options.k > 16:
        return "uint8"
    if opset >= UINT4_OPSET:
        return "uint4"
    return "packed4" if opset >= PACKED4_OPSET else "uint8"


class ClusterPass(ir.passes.InPlacePass):
    def __init__(self, options: ClusterOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    def _cluster(self, array: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(codebook [k], labels shaped like array) for one tensor or one channel."""
        o = self.options
        result = cluster(array, o.k, init=o.init, iterations=o.iterations, keep_zero=o.keep_zeros, seed=seed)
        return result.centroids, result.labels.reshape(array.shape)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o = self.options
        index_bits = _index_bits(o, model.opset_imports.get("", 1))
        report = {}
        for index, (value, consumers) in enumerate(_weights(model, o.min_elements).items()):
            array = value.const_value.numpy()
            seed = int(self.context.rng(index).integers(2**31))
            if o.per_channel and array.ndim >= 2:
                axis = _channel_axis(consumers, array.ndim)
                moved = np.moveaxis(array, axis, 0)
                parts = [self._cluster(channel, seed + i) for i, channel in enumerate(moved)]
                width = max(len(codebook) for codebook, _ in parts)
                codebook = np.stack([np.pad(c, (0, width - len(c)), constant_values=c[-1]) for c, _ in parts])
                labels = np.moveaxis(np.stack([labels for _, labels in parts]), 0, axis)
                approx = np.moveaxis(np.stack([c[lab] for c, lab in parts]), 0, axis)
            else:
                axis = None
                codebook, labels = self._cluster(array, seed)
                approx = codebook[labels]
            approx = approx.astype(array.dtype)
            report[value.name] = {
                "k": int(codebook.shape[-1]),
                "rel_l2": round(float(np.linalg.norm(approx - array) / max(np.linalg.norm(array), 1e-12)), 5),
                "unique": int(np.unique(approx).size),
            }
            if o.encoding == "snap":
                value.const_value = ir.tensor(approx, name=value.name)
            else:
                bits = "uint8" if index_bits == "packed4" and array.size < PACKED4_MIN_ELEMENTS else index_bits
                _encode(value, codebook.astype(array.dtype), labels, axis, bits)
        self.context.stats["tensors_clustered"] = len(report)
        if report:
            self.context.stats["tensors"] = report
            self.context.stats["encoding"] = f"{index_bits} codebook" if o.encoding == "codebook" else "snap"
        return ir.passes.PassResult(model, modified=bool(report))


def _initializer(graph: ir.Graph, name: str, tensor: ir.TensorProtocol) -> ir.Value:
    value = ir.Value(name=name, const_value=tensor)
    value.type, value.shape = ir.TensorType(tensor.dtype), ir.Shape(tensor.shape)
    graph.register_initializer(value)
    return value


def _const(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    return _initializer(graph, name, ir.tensor(array))


def _shared(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A small constant every decoder in the graph reads, stored once."""
    existing = graph.initializers.get(name)
    return existing if existing is not None else _const(graph, name, array)


def _packed_nibble_decoder(graph: ir.Graph, name: str, labels: np.ndarray) -> list[ir.Node]:
    """Two 4-bit indices per uint8 byte, unpacked in-graph with int64 Div / Mod (opset 13+).

    For models whose opset predates the uint4 type (21): the same 8x saving, decoded by ops every opset has.
    """
    flat = labels.reshape(-1).astype(np.uint8)
    padded = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
    packed = _const(graph, f"{name}_cluster_packed", (padded[0::2] << 4 | padded[1::2]).astype(np.uint8))
    sixteen = _shared(graph, "cluster_sixteen", np.array(16, np.int64))
    as_int = ir.node("Cast", inputs=[packed], attributes={"to": ir.DataType.INT64})
    high = ir.node("Div", inputs=[as_int.outputs[0], sixteen])
    low = ir.node("Mod", inputs=[as_int.outputs[0], sixteen])
    axis = _shared(graph, "cluster_axis_1", np.array([1], np.int64))
    high2 = ir.node("Unsqueeze", inputs=[high.outputs[0], axis])
    low2 = ir.node("Unsqueeze", inputs=[low.outputs[0], axis])
    pairs = ir.node("Concat", inputs=[high2.outputs[0], low2.outputs[0]], attributes={"axis": 1})
    trimmed = ir.node("Slice", inputs=[
        ir.node("Reshape", inputs=[pairs.outputs[0], _shared(graph, "cluster_flat", np.array([-1], np.int64))]).outputs[0],
        _shared(graph, "cluster_zero", np.array([0], np.int64)),
        _const(graph, f"{name}_cluster_stop", np.array([flat.size], np.int64)),
    ])  # fmt: skip
    reshape_flat = trimmed.inputs[0].producer()
    shaped = ir.node("Reshape", inputs=[trimmed.outputs[0], _const(graph, f"{name}_cluster_shape", np.array(labels.shape, np.int64))])
    return [as_int, high, low, high2, low2, pairs, reshape_flat, trimmed, shaped]


def _encode(value: ir.Value, codebook: np.ndarray, labels: np.ndarray, axis: int | None, index_bits: str) -> None:
    """Replace the weight initializer by indices + codebook and a decoder feeding its consumers.

    ``index_bits``: ``uint4`` (the ONNX type, opset 21+), ``packed4`` (two per byte, opset 13+) or ``uint8``.
    Per channel, the codebook is flattened to ``[channels * k]`` and a small int64 offset per channel is
    added to the indices, so the stored indices keep their 4 or 8 bits.
    """
    graph = value.graph
    name = value.name
    if index_bits == "packed4":
        nodes = _packed_nibble_decoder(graph, name, labels)
    else:
        dtype = ir.DataType.UINT4 if index_bits == "uint4" else ir.DataType.UINT8
        indices = _initializer(graph, f"{name}_cluster_indices", ir.tensor(labels.astype(dtype.numpy()), dtype=dtype))
        nodes = [ir.node("Cast", inputs=[indices], attributes={"to": ir.DataType.INT64})]
    if axis is not None:
        width = codebook.shape[1]
        offsets = (np.arange(codebook.shape[0], dtype=np.int64) * width).reshape([-1 if i == axis else 1 for i in range(labels.ndim)])
        nodes.append(ir.node("Add", inputs=[nodes[-1].outputs[0], _const(graph, f"{name}_cluster_offsets", offsets)]))
    table = _const(graph, f"{name}_cluster_codebook", codebook.reshape(-1))
    nodes.append(ir.node("Gather", inputs=[table, nodes[-1].outputs[0]], attributes={"axis": 0}))
    decoded = nodes[-1].outputs[0]
    decoded.name, decoded.type, decoded.shape = f"{name}_decoded", value.type, value.shape
    first = min((use.node for use in value.uses()), key=list(graph).index)
    graph.insert_before(first, nodes)
    value.replace_all_uses_with(decoded)
    del graph.initializers[name]


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="cluster",
            summary="k-means weight sharing with a codebook (uint8 / uint4 indices decoded in-graph) or snapped values",
            create=ClusterPass,
            options=ClusterOptions,
            handles_subgraphs=True,
        )
    )
