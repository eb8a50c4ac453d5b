"""Store a sparse weight as a 1-bit mask plus its nonzero values, decoded in the graph.

What onnx and onnxruntime load: a dense tensor full of zeros is as large as before (it only shrinks when
zipped, bench/prune_real_models.py); ONNX's ``sparse_initializer`` stores int64 COO indices — 12 bytes per
nonzero float: onnxruntime 1.32 loads it, but a 256x256 MatMul weight at 50 % sparsity made a file 1.50x the
dense one, and onnx-ir 1.1 drops sparse initializers when it loads a model. Here: ``N / 8`` bytes of mask + the nonzero
values, 0.53x of dense at 50 % sparsity, 0.23x at 80 %. The decoder — BitShift / Mod unpacks the mask, CumSum gives
each value's index (a running count of the mask; 0 positions read a trailing zero), Gather puts the values back —
reads only constants and has static shapes, so onnxruntime folds it at session start and inference runs the
same dense weights (NonZero + ScatterND, the obvious decoder, is not folded: its output shape depends on data).
Needs opset 11 (BitShift, CumSum). Written here: no library offers an in-graph sparse encoding.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import new_initializer, shared_initializer

MIN_OPSET = 11


def saves_bytes(array: np.ndarray) -> bool:
    """Whether mask + values (+ ~100 bytes of decoder) are smaller than the dense tensor."""
    return array.size / 8 + np.count_nonzero(array) * array.itemsize + 100 < array.nbytes


def encode(value: ir.Value) -> None:
    """Replace the initializer ``value`` by its mask and values and a decoder feeding its readers."""
    graph = value.graph
    array = value.const_value.numpy()
    flat = array.reshape(-1)
    mask = flat != 0
    name = value.name
    packed = new_initializer(graph, f"{name}_mask", np.packbits(mask))  # most significant bit first
    # the nonzero values and one trailing zero, which index -1 reads for every masked-out position
    nonzero = new_initializer(graph, f"{name}_nonzero", np.append(flat[mask], flat.dtype.type(0)))
    shifts = shared_initializer(graph, "prune_bit_shifts", np.arange(7, -1, -1, dtype=np.uint8).reshape(1, 8))
    rows = ir.node("Reshape", inputs=[packed, shared_initializer(graph, "prune_column", np.array([-1, 1], np.int64))])
    bits = ir.node("BitShift", inputs=[rows.outputs[0], shifts], attributes={"direction": "RIGHT"})
    ones = ir.node("Mod", inputs=[bits.outputs[0], shared_initializer(graph, "prune_two", np.array(2, np.uint8))])
    line = ir.node(
        "Reshape", inputs=[ones.outputs[0], shared_initializer(graph, "prune_flat", np.array([-1], np.int64))]
    )
    trimmed = ir.node("Slice", inputs=[
        line.outputs[0],
        shared_initializer(graph, "prune_zero", np.array([0], np.int64)),
        new_initializer(graph, f"{name}_size", np.array([flat.size], np.int64)),
    ])  # fmt: skip
    as_int = ir.node("Cast", inputs=[trimmed.outputs[0]], attributes={"to": ir.DataType.INT64})
    count = ir.node(
        "CumSum", inputs=[as_int.outputs[0], shared_initializer(graph, "prune_axis_0", np.array(0, np.int64))]
    )
    counted = ir.node("Mul", inputs=[count.outputs[0], as_int.outputs[0]])
    indices = ir.node("Sub", inputs=[counted.outputs[0], shared_initializer(graph, "prune_one", np.array(1, np.int64))])
    dense = ir.node("Gather", inputs=[nonzero, indices.outputs[0]], attributes={"axis": 0})
    shaped = ir.node(
        "Reshape", inputs=[dense.outputs[0], new_initializer(graph, f"{name}_shape", np.array(array.shape, np.int64))]
    )
    decoded = shaped.outputs[0]
    decoded.name, decoded.type, decoded.shape = f"{name}_decoded", value.type, value.shape
    first = min((use.node for use in value.uses()), key=list(graph).index)
    graph.insert_before(first, [rows, bits, ones, line, trimmed, as_int, count, counted, indices, dense, shaped])
    value.replace_all_uses_with(decoded)
    del graph.initializers[name]
