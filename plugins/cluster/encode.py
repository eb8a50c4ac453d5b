"""The codebook encoding: a clustered weight becomes indices + a float codebook, decoded in the graph.

Indices are 1 bit when a codebook holds two values (binarized weights: eight per uint8 byte, unpacked by
BitShift / Mod from opset 11), 4 bits when every index fits (the uint4 type from opset 21; two per uint8 byte
from opset 11, unpacked by BitShift / Mod, or for a large per-tensor codebook looked up whole in a table of
centroid pairs) or uint8. The decoder is ``Cast`` (to int32: half the bytes of int64 for onnxruntime to
materialise at session start) + ``Gather`` (+ an ``Add`` of per-channel offsets into a flattened ``[channels * width]``
codebook, so the stored indices keep their 4 or 8 bits).
Every input of the decoder is constant, so onnxruntime folds it at session start and runs the same float
weights as before.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import new_initializer, shared_initializer

UINT4_OPSET = 21  # the uint4 type and Cast from it
PACKED_OPSET = 11  # BitShift, for the packed-nibble and packed-bit decoders
#: From this many weights a per-tensor 4-bit codebook is decoded through a 2 kB table of centroid pairs
#: (at most ~6 % of the packed indices): faster to fold at session start than unpacking nibbles.
PAIR_TABLE_MIN_ELEMENTS = 65536
#: Bits one index takes in each storage.
INDEX_BITS = {"packed1": 1, "uint4": 4, "packed4": 4, "uint8": 8}
#: What a decoder adds to the file besides indices and codebook (nodes, names, shapes), measured on the
#: serialized fixtures: a Cast + Gather ~250 bytes, the packed-nibble (and packed-bit) unpacking ~600. It decides the
#: storage of small weights, where it is not negligible: a 72-value weight stays snapped rather than encoded.
DECODER_BYTES = {"packed1": 600, "uint4": 250, "packed4": 600, "uint8": 250}


def storage(codebook: np.ndarray, size: int, itemsize: int, opset: int) -> str:
    """The smallest storage for ``size`` values clustered into ``codebook``: ``packed1`` (eight indices a byte,
    two-value codebooks, opset 11+), ``uint4`` (opset 21+), ``packed4`` (two indices a byte, opset 11+), ``uint8``
    indices, or ``snap`` (the values themselves, when no index storage is smaller: short weights, or int8 weights
    that would need uint8 indices)."""
    costs = {"snap": size * itemsize}
    candidates = ["uint8"]
    if codebook.shape[-1] <= 16:
        candidates += ["uint4"] if opset >= UINT4_OPSET else ["packed4"] if opset >= PACKED_OPSET else []
    if codebook.shape[-1] <= 2 and opset >= PACKED_OPSET:
        candidates.append("packed1")
    for index in candidates:
        costs[index] = -(-size * INDEX_BITS[index] // 8) + codebook.nbytes + DECODER_BYTES[index]
    return min(costs, key=costs.__getitem__)


def _packed(labels: np.ndarray, bits: int) -> np.ndarray:
    """The indices ``8 / bits`` per byte, the first in the highest bits, padded with zero indices to whole bytes."""
    per_byte = 8 // bits
    flat = labels.reshape(-1).astype(np.uint8)
    padded = np.concatenate([flat, np.zeros(-flat.size % per_byte, np.uint8)]).reshape(-1, per_byte)
    shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(padded << shifts, axis=1).astype(np.uint8)


def _groups_to_shape(
    graph: ir.Graph, name: str, groups: ir.Value, shape: tuple[int, ...], per_byte: int
) -> list[ir.Node]:
    """``[n / per_byte, per_byte]`` values (the indices of a byte, in order) reshaped to ``shape``, the padding
    sliced off."""
    size = int(np.prod(shape))
    nodes = []
    if size % per_byte:
        line = ir.node("Reshape", inputs=[groups, shared_initializer(graph, "cluster_flat", np.array([-1], np.int64))])
        trimmed = ir.node("Slice", inputs=[
            line.outputs[0],
            shared_initializer(graph, "cluster_zero", np.array([0], np.int64)),
            new_initializer(graph, f"{name}_cluster_stop", np.array([size], np.int64)),
        ])  # fmt: skip
        nodes, groups = [line, trimmed], trimmed.outputs[0]
    target = new_initializer(graph, f"{name}_cluster_shape", np.array(shape, np.int64))
    return [*nodes, ir.node("Reshape", inputs=[groups, target])]


def _packed_nibble_decoder(graph: ir.Graph, name: str, labels: np.ndarray) -> list[ir.Node]:
    """Two 4-bit indices per uint8 byte, unpacked in-graph by BitShift / Mod on the bytes (opset 11+).

    For models whose opset predates the uint4 type (21): the same 8x saving, decoded by ops every opset has.
    Everything stays uint8 until the final Cast, because onnxruntime materialises every folded intermediate:
    int64 arithmetic on a 12M-weight table made session start 13x slower than fp32 (uint8: see bench/README.md).
    The bytes are stored as a column ``[n / 2, 1]``, so high and low nibbles Concat into ``[n / 2, 2]``, which
    is the indices in order.
    """
    packed = new_initializer(graph, f"{name}_cluster_packed", _packed(labels, 4).reshape(-1, 1))
    high = ir.node("BitShift", inputs=[packed, shared_initializer(graph, "cluster_four", np.array(4, np.uint8))],
                   attributes={"direction": "RIGHT"})  # fmt: skip
    low = ir.node("Mod", inputs=[packed, shared_initializer(graph, "cluster_sixteen", np.array(16, np.uint8))])
    pairs = ir.node("Concat", inputs=[high.outputs[0], low.outputs[0]], attributes={"axis": 1})
    nodes = [high, low, pairs, *_groups_to_shape(graph, name, pairs.outputs[0], labels.shape, 2)]
    nodes.append(ir.node("Cast", inputs=[nodes[-1].outputs[0]], attributes={"to": ir.DataType.INT32}))
    return nodes


def _packed_bit_decoder(graph: ir.Graph, name: str, labels: np.ndarray) -> list[ir.Node]:
    """Eight 1-bit indices per uint8 byte (a two-value codebook: binarized weights), unpacked in-graph by
    shifting each byte (stored as a column ``[n / 8, 1]``) right by 7 ... 0 at once (``[n / 8, 8]``) and taking
    each result mod 2: the indices in order, uint8 until the final Cast (opset 11+)."""
    packed = new_initializer(graph, f"{name}_cluster_bits", _packed(labels, 1).reshape(-1, 1))
    shifts = shared_initializer(graph, "cluster_bit_shifts", np.arange(7, -1, -1, dtype=np.uint8))
    shifted = ir.node("BitShift", inputs=[packed, shifts], attributes={"direction": "RIGHT"})
    bits = ir.node("Mod", inputs=[shifted.outputs[0], shared_initializer(graph, "cluster_two", np.array(2, np.uint8))])
    nodes = [shifted, bits, *_groups_to_shape(graph, name, bits.outputs[0], labels.shape, 8)]
    nodes.append(ir.node("Cast", inputs=[nodes[-1].outputs[0]], attributes={"to": ir.DataType.INT32}))
    return nodes


def _pair_table_decoder(graph: ir.Graph, name: str, codebook: np.ndarray, labels: np.ndarray) -> list[ir.Node]:
    """Packed 4-bit indices of one per-tensor codebook, decoded by a single Gather from a 256 x 2 table of
    centroid pairs (byte ``b`` -> ``codebook[b >> 4], codebook[b & 15]``): nothing to unpack, so onnxruntime
    starts the session about twice as fast as with :func:`_packed_nibble_decoder` (a 12M-weight table: 0.30 s
    against 0.58 s, fp32 0.18 s). The table costs 2 kB, so only large weights use it."""
    full = np.concatenate([codebook, np.repeat(codebook[-1:], 16 - codebook.size)])
    table = np.stack([np.repeat(full, 16), np.tile(full, 16)], axis=1)
    packed = new_initializer(graph, f"{name}_cluster_packed", _packed(labels, 4))
    as_int = ir.node("Cast", inputs=[packed], attributes={"to": ir.DataType.INT32})
    pairs = ir.node(
        "Gather",
        inputs=[new_initializer(graph, f"{name}_cluster_pairs", table), as_int.outputs[0]],
        attributes={"axis": 0},
    )
    return [as_int, pairs, *_groups_to_shape(graph, name, pairs.outputs[0], labels.shape, 2)]


def encode(value: ir.Value, codebook: np.ndarray, labels: np.ndarray, axis: int | None, index: str) -> None:
    """Replace the weight initializer ``value`` by indices + codebook and a decoder feeding its consumers.

    ``codebook``: ``[width]`` for one per tensor, ``[channels, width]`` per channel along ``axis`` of ``labels``.
    ``index``: ``packed1``, ``uint4``, ``packed4`` or ``uint8`` (see :func:`storage`).
    """
    graph = value.graph
    name = value.name
    if index == "packed4" and axis is None and labels.size >= PAIR_TABLE_MIN_ELEMENTS:
        nodes = _pair_table_decoder(graph, name, codebook, labels)
    else:
        nodes = _indices_decoder(graph, name, codebook, labels, axis, index)
    for step, node in enumerate(nodes[:-1]):  # named after the weight: onnx_ir's own names (val_0, ...) restart
        node.outputs[0].name = f"{name}_cluster_step{step}"  # in every subgraph and would clash with the main graph's
    decoded = nodes[-1].outputs[0]
    decoded.name, decoded.type, decoded.shape = f"{name}_decoded", value.type, value.shape
    first = min((use.node for use in value.uses()), key=list(graph).index)
    graph.insert_before(first, nodes)
    value.replace_all_uses_with(decoded)
    del graph.initializers[name]


def _indices_decoder(graph: ir.Graph, name: str, codebook: np.ndarray, labels: np.ndarray, axis: int | None,
                     index: str) -> list[ir.Node]:  # fmt: skip
    """Indices (packed, uint4 or uint8) widened to int32, then looked up in the codebook.

    Per channel along the first or last axis, the indices are laid out as a 2-D ``[channels, rest]`` or
    ``[rest, channels]`` grid and looked up by GatherElements in the ``[channels, width]`` codebook (or its
    transpose): no per-channel offsets to add, about a quarter less session-start work for onnxruntime. A
    channel axis in the middle (ConvTranspose) adds int32 offsets into the flattened codebook instead.
    """
    channels = None if axis is None else codebook.shape[0]
    by_elements = axis is not None and axis in (0, labels.ndim - 1)
    grid = labels.shape
    if by_elements:
        grid = (channels, labels.size // channels) if axis == 0 else (labels.size // channels, channels)
    grid_labels = labels.reshape(grid)
    if index in ("packed1", "packed4"):
        nodes = (_packed_bit_decoder if index == "packed1" else _packed_nibble_decoder)(graph, name, grid_labels)
    else:
        dtype = ir.DataType.UINT4 if index == "uint4" else ir.DataType.UINT8
        indices = ir.Value(
            name=f"{name}_cluster_indices", const_value=ir.tensor(grid_labels.astype(dtype.numpy()), dtype=dtype)
        )
        indices.type, indices.shape = ir.TensorType(dtype), ir.Shape(grid)
        graph.register_initializer(indices)
        nodes = [ir.node("Cast", inputs=[indices], attributes={"to": ir.DataType.INT32})]
    if by_elements:
        table = new_initializer(
            graph, f"{name}_cluster_codebook", codebook if axis == 0 else np.ascontiguousarray(codebook.T)
        )
        nodes.append(
            ir.node("GatherElements", inputs=[table, nodes[-1].outputs[0]], attributes={"axis": 1 if axis == 0 else 0})
        )
        if grid != labels.shape:
            target = new_initializer(graph, f"{name}_cluster_shape", np.array(labels.shape, np.int64))
            nodes.append(ir.node("Reshape", inputs=[nodes[-1].outputs[0], target]))
        return nodes
    if axis is not None:
        width = codebook.shape[1]
        offsets = (np.arange(channels, dtype=np.int32) * width).reshape(
            [-1 if i == axis else 1 for i in range(labels.ndim)]
        )
        nodes.append(
            ir.node("Add", inputs=[nodes[-1].outputs[0], new_initializer(graph, f"{name}_cluster_offsets", offsets)])
        )
    table = new_initializer(graph, f"{name}_cluster_codebook", codebook.reshape(-1))
    nodes.append(ir.node("Gather", inputs=[table, nodes[-1].outputs[0]], attributes={"axis": 0}))
    return nodes
