"""The codebook encoding: a clustered weight becomes indices + a float codebook, decoded in the graph.

Indices are 4 bits when every index fits (the uint4 type from opset 21; two per uint8 byte unpacked by
BitShift / Mod from opset 11) or uint8. The decoder is ``Cast`` (to int32: half the bytes of int64 for
onnxruntime to materialise at session start) + ``Gather`` (+ an ``Add`` of per-channel
offsets into a flattened ``[channels * width]`` codebook, so the stored indices keep their 4 or 8 bits).
Every input of the decoder is constant, so onnxruntime folds it at session start and runs the same float
weights as before.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.weights import new_initializer, shared_initializer

UINT4_OPSET = 21  # the uint4 type and Cast from it
PACKED4_OPSET = 11  # BitShift, for the packed-nibble decoder
#: Below this many weights the packed-nibble decoder's nodes cost more bytes than the second nibble saves.
PACKED4_MIN_ELEMENTS = 1024


def index_format(width: int, size: int, opset: int) -> str:
    """``uint4``, ``packed4`` or ``uint8``: the smallest index storage this codebook width and opset allow."""
    if width > 16:
        return "uint8"
    if opset >= UINT4_OPSET:
        return "uint4"
    return "packed4" if opset >= PACKED4_OPSET and size >= PACKED4_MIN_ELEMENTS else "uint8"


def _packed_nibble_decoder(graph: ir.Graph, name: str, labels: np.ndarray) -> list[ir.Node]:
    """Two 4-bit indices per uint8 byte, unpacked in-graph by BitShift / Mod on the bytes (opset 11+).

    For models whose opset predates the uint4 type (21): the same 8x saving, decoded by ops every opset has.
    Everything stays uint8 until the final Cast, because onnxruntime materialises every folded intermediate:
    int64 arithmetic on a 12M-weight table made session start 13x slower than fp32 (uint8: see bench/README.md).
    The bytes are stored as a column ``[n / 2, 1]``, so high and low nibbles Concat into ``[n / 2, 2]``, which
    is the indices in order.
    """
    flat = labels.reshape(-1).astype(np.uint8)
    padded = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
    packed = new_initializer(graph, f"{name}_cluster_packed", (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).reshape(-1, 1))
    four = shared_initializer(graph, "cluster_four", np.array(4, np.uint8))
    high = ir.node("BitShift", inputs=[packed, four], attributes={"direction": "RIGHT"})
    low = ir.node("Mod", inputs=[packed, shared_initializer(graph, "cluster_sixteen", np.array(16, np.uint8))])
    pairs = ir.node("Concat", inputs=[high.outputs[0], low.outputs[0]], attributes={"axis": 1})
    nodes = [high, low, pairs]
    if flat.size % 2:
        line = ir.node("Reshape", inputs=[pairs.outputs[0], shared_initializer(graph, "cluster_flat", np.array([-1], np.int64))])
        trimmed = ir.node("Slice", inputs=[
            line.outputs[0],
            shared_initializer(graph, "cluster_zero", np.array([0], np.int64)),
            new_initializer(graph, f"{name}_cluster_stop", np.array([flat.size], np.int64)),
        ])  # fmt: skip
        nodes += [line, trimmed]
    shape = new_initializer(graph, f"{name}_cluster_shape", np.array(labels.shape, np.int64))
    nodes.append(ir.node("Reshape", inputs=[nodes[-1].outputs[0], shape]))
    nodes.append(ir.node("Cast", inputs=[nodes[-1].outputs[0]], attributes={"to": ir.DataType.INT32}))
    return nodes


def encode(value: ir.Value, codebook: np.ndarray, labels: np.ndarray, axis: int | None, index: str) -> None:
    """Replace the weight initializer ``value`` by indices + codebook and a decoder feeding its consumers.

    ``codebook``: ``[width]`` for one per tensor, ``[channels, width]`` per channel along ``axis`` of ``labels``.
    ``index``: ``uint4``, ``packed4`` or ``uint8`` (see :func:`index_format`).
    """
    graph = value.graph
    name = value.name
    if index == "packed4":
        nodes = _packed_nibble_decoder(graph, name, labels)
    else:
        dtype = ir.DataType.UINT4 if index == "uint4" else ir.DataType.UINT8
        indices = ir.Value(name=f"{name}_cluster_indices", const_value=ir.tensor(labels.astype(dtype.numpy()), dtype=dtype))
        indices.type, indices.shape = ir.TensorType(dtype), ir.Shape(labels.shape)
        graph.register_initializer(indices)
        nodes = [ir.node("Cast", inputs=[indices], attributes={"to": ir.DataType.INT32})]
    if axis is not None:
        width = codebook.shape[1]
        offsets = (np.arange(codebook.shape[0], dtype=np.int32) * width).reshape([-1 if i == axis else 1 for i in range(labels.ndim)])
        nodes.append(ir.node("Add", inputs=[nodes[-1].outputs[0], new_initializer(graph, f"{name}_cluster_offsets", offsets)]))
    table = new_initializer(graph, f"{name}_cluster_codebook", codebook.reshape(-1))
    nodes.append(ir.node("Gather", inputs=[table, nodes[-1].outputs[0]], attributes={"axis": 0}))
    decoded = nodes[-1].outputs[0]
    decoded.name, decoded.type, decoded.shape = f"{name}_decoded", value.type, value.shape
    first = min((use.node for use in value.uses()), key=list(graph).index)
    graph.insert_before(first, nodes)
    value.replace_all_uses_with(decoded)
    del graph.initializers[name]
