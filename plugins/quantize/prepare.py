"""Graph changes before and after onnxruntime's quantizer that make the int8 model faster and smaller.

Written here (no library does these): onnxruntime has no QLinearDiv, so a division by a constant (the "/ 6" of
every hard-swish in PP-OCRv4) stayed float between a DequantizeLinear and a QuantizeLinear, a large share of
the recognizer's int8 run time (figures: bench/README.md, section quantize_real_models.py). It becomes a
multiplication by the reciprocal, which onnxruntime runs as QLinearMul. A layer norm written out as ReduceMean /
Sub / Pow / Sqrt / Div (opset < 17 exports) gets Q/DQ pairs between its parts, which stops onnxruntime fusing it
into one LayerNormalization kernel; its nodes are kept float so only its input and output are quantized.

After quantizing, all-zero zero points of weight DequantizeLinear nodes are dropped (zero is the default;
onnxruntime fuses the same QLinearConv / QLinearMatMul without them — but not QGemm, so a Gemm's weight keeps
its zero point), equal initializers are shared and value_info is cleared (onnxruntime infers shapes itself),
which makes the file smaller (by how much: the same section).

Hand-written walks rather than onnxscript ``RewriteRule`` patterns: a rule's replacement is a new node (unnamed,
then given a generated name) reading a new Constant node, and the rewriter also enters subgraph and function
bodies; here the Div becomes a Mul in place, so it keeps its name (``exclude_nodes`` and ``exclude_regex`` name
nodes) and reads an initializer, in the main graph only, as the quantizer is given it. The layer-norm finder
follows a variance branch whose form varies (Pow or Mul, an epsilon Add or none) on the onnx protos the
quantizer reads, and :func:`compact` is bookkeeping over the whole graph, not a local rewrite.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common  # not loaded by importing onnx_ir


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if (
        producer is not None
        and producer.op_type == "Constant"
        and producer.domain == ""
        and "value" in producer.attributes
    ):
        return producer.attributes["value"].as_tensor().numpy()
    return None


def divisions_to_multiplications(model: ir.Model) -> int:
    """Rewrite ``Div(x, c)`` with a float constant ``c`` without zeros into ``Mul(x, 1 / c)``; returns the count."""
    count = 0
    graph = model.graph
    for node in list(graph):
        if node.op_type != "Div" or node.domain != "" or len(node.inputs) != 2:
            continue
        divisor = _constant(node.inputs[1])
        if divisor is None or divisor.dtype.kind != "f" or not np.all(divisor) or not np.all(np.isfinite(divisor)):
            continue
        reciprocal = ir.Value(name=f"{node.inputs[1].name}_reciprocal_{count}",
                              const_value=ir.tensor((1 / divisor).astype(divisor.dtype)))  # fmt: skip
        reciprocal.shape, reciprocal.type = ir.Shape(divisor.shape), ir.TensorType(reciprocal.const_value.dtype)
        graph.register_initializer(reciprocal)
        divisor_value = node.inputs[1]
        node.op_type = "Mul"
        node.replace_input_with(1, reciprocal)
        if divisor_value.is_initializer() and not divisor_value.uses() and not divisor_value.is_graph_output():
            del graph.initializers[divisor_value.name]  # else onnxruntime warns of it on every session
        count += 1
    return count


def layer_norm_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of the nodes of layer norms written out as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div
    (and the affine Mul / Add that follow), which onnxruntime fuses into LayerNormalization when left float."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name for i in graph.initializer}
    found: set[str] = set()
    for mean in graph.node:
        if mean.op_type != "ReduceMean":
            continue
        subs = [
            n
            for n in consumers.get(mean.output[0], [])
            if n.op_type == "Sub" and list(n.input) == [mean.input[0], mean.output[0]]
        ]
        if len(subs) != 1:
            continue
        centred = subs[0].output[0]
        divs = [n for n in consumers.get(centred, []) if n.op_type == "Div" and n.input[0] == centred]
        if len(divs) != 1:
            continue
        norm = {mean.name, subs[0].name, divs[0].name}
        pending, ok = [divs[0].input[1]], True
        while pending and ok:  # the variance branch: back from the divisor to the centred value
            name = pending.pop()
            if name == centred or name in constants:
                continue
            node = producers.get(name)
            ok = node is not None and node.op_type in {"Sqrt", "Add", "ReduceMean", "Pow", "Mul"} and len(norm) < 10
            if ok:
                norm.add(node.name)
                pending.extend(node.input)
        if not ok:
            continue
        tail = divs[0].output[0]
        for op in ("Mul", "Add"):  # gamma, then beta
            users = consumers.get(tail, [])
            if len(users) == 1 and users[0].op_type == op and any(i in constants for i in users[0].input):
                norm.add(users[0].name)
                tail = users[0].output[0]
        found |= norm
    return found


def compact(model: ir.Model) -> int:
    """Drop all-zero zero points of DequantizeLinear nodes on weights, share equal initializers and clear
    value_info; returns how many zero points went.

    Activation Q/DQ pairs keep theirs even when zero: without them onnxruntime no longer removes the pair
    around a Reshape (measured on PP-OCRv4 rec: three more Q/DQ pairs left in its optimized graph).
    """
    dropped = 0
    for node in model.graph:
        if node.op_type != "DequantizeLinear" or len(node.inputs) != 3 or node.inputs[2] is None:
            continue
        if any(use.node.op_type == "Gemm" for use in node.outputs[0].uses()):
            continue  # onnxruntime 1.32 fuses Q/DQ + Gemm into QGemm only with the weight's zero point
        data, zero = node.inputs[0].const_value if node.inputs[0] else None, node.inputs[2].const_value
        if data is not None and zero is not None and not zero.numpy().any():
            node.resize_inputs(2)
            dropped += 1
    ir.passes.common.RemoveUnusedNodesPass()(model)
    ir.passes.common.DeduplicateInitializersPass()(model)  # the many scalar scales / zero points alike
    for node in model.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape, value.type = None, None
    return dropped
