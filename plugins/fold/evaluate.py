"""Nodes onnxscript's folder leaves although every input is constant, folded by running them in onnxruntime.

onnxscript 0.7.2 folds single-output nodes only, through onnx's reference implementation ("Skipping constant
folding for op Split with multiple outputs"): Split, LayerNormalization, Attention, SoftmaxCrossEntropyLoss
with its log_prob output and the like stayed in the graph with constant inputs. Here such a node runs alone
in an onnxruntime session (the runtime the model is deployed on, so the folded value is the one it would have
computed), and each of its outputs becomes an initializer.

Bounded like the rest of fold: the node's inputs and its outputs' element counts, known from shape inference
before anything runs, must be within the limit. Control flow, random ops, ops of domains other than ONNX's
own two, and the ops onnxscript keeps on purpose (Quantize / DequantizeLinear keep a model's quantization
visible) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from .folding import HIDDEN_DOMAIN, output_elements

#: Never evaluated here: control flow (its bodies are folded where they are), random ops, and what onnxscript
#: keeps by default (a small ConstantOfShape it folds when fold's should_fold asks; a large one stays).
LEFT_ALONE = frozenset({
    "Constant", "If", "Loop", "Scan", "SequenceMap",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConstantOfShape",
})  # fmt: skip


#: Ops whose output sizes shape inference may not give (they depend on the data, or onnx's function body for
#: the op does not infer) but that are bounded by the inputs' element count times this factor: Unique's four
#: outputs, NonZero's [rank, count] (rank <= 8 here), Compress, and normalizations shaped like their input.
BOUNDED_BY_INPUT = {"Unique": 4, "NonZero": 8, "Compress": 1, "MeanVarianceNormalization": 1, "GroupNormalization": 1}

#: The domains evaluated here: onnxruntime implements both on CPU; any other domain is left as it is.
DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _candidate(node: ir.Node, limit: int) -> bool:
    """Standard-domain, every input a constant within the limit, tensor outputs, no subgraph."""
    if node.domain not in (*DOMAINS, HIDDEN_DOMAIN) or node.op_type in LEFT_ALONE or node.graph is None:
        return False
    inputs = [v for v in node.inputs if v is not None]
    if not inputs or any(v.const_value is None or v.is_graph_input() or v.const_value.size > limit for v in inputs):
        return False
    if any(
        attr.is_ref() or attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
        for attr in node.attributes.values()
    ):
        return False
    return all(isinstance(v.type, ir.TensorType) for v in node.outputs if v.name)


def _one_node_model(node: ir.Node, opsets: dict[str, int], ir_version: int):
    """The node alone as an onnx.ModelProto, its constant inputs as initializers, its outputs ``out0``..."""
    import onnx

    names: dict[ir.Value, str] = {}
    inputs = [names.setdefault(v, f"in{len(names)}") if v is not None else "" for v in node.inputs]
    initializers = []
    for value, name in names.items():
        tensor = ir.serde.serialize_tensor(value.const_value)
        tensor.name = name
        initializers.append(tensor)
    outputs = [f"out{i}" if v.name else "" for i, v in enumerate(node.outputs)]  # an optional output stays off
    proto = ir.serde.serialize_node(node)
    proto.domain = "" if proto.domain == HIDDEN_DOMAIN else proto.domain
    del proto.input[:], proto.output[:]
    proto.input.extend(inputs)
    proto.output.extend(outputs)
    value_infos = []
    for value, name in zip(node.outputs, outputs):
        if name:
            value_infos.append(onnx.ValueInfoProto(name=name))
            value_infos[-1].type.tensor_type.elem_type = value.dtype.value
    graph = onnx.helper.make_graph([proto], "fold", [], value_infos, initializers)
    imports = [onnx.helper.make_opsetid(domain, version) for domain, version in opsets.items() if domain in DOMAINS]
    return onnx.helper.make_model(graph, opset_imports=imports, ir_version=ir_version)


def _elements(node: ir.Node, model) -> int | None:
    """The outputs' element count before running anything: inferred by onnxscript's folder, else by onnx's shape
    inference of the one-node model (functions such as MeanVarianceNormalization expanded), else a bound."""
    import math

    import onnx

    known = output_elements(node)
    if known is not None:
        return known
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph.output
    except Exception:
        inferred = []
    dims = [[d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim] for o in inferred
            if o.type.tensor_type.HasField("shape")]  # fmt: skip
    if len(dims) == len(model.graph.output) and all(None not in d for d in dims):
        return sum(math.prod(d) for d in dims)
    factor = BOUNDED_BY_INPUT.get(node.op_type)
    if factor is None or any(v is not None and len(v.const_value.shape) > 8 for v in node.inputs):
        return None
    return factor * sum(v.const_value.size for v in node.inputs if v is not None)


def _run(model) -> list[ir.TensorProtocol] | None:
    """The outputs of a one-node model from an onnxruntime session, or None if it cannot run there."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = session.run_with_ort_values(None, {})
    except Exception:  # an op or a type onnxruntime does not run on CPU: the node stays
        return None
    return [_tensor(value) for value in results] if all(_plain_tensor(value) for value in results) else None


def _plain_tensor(value) -> bool:
    """A tensor of fixed-size elements (strings, sequences and maps are not stored as initializers here)."""
    import onnx

    return value.is_tensor() and value.element_type() != onnx.TensorProto.STRING


def _tensor(value) -> ir.TensorProtocol:
    """An OrtValue's bytes as an onnx_ir tensor: the raw layout is ONNX's, 4- and 2-bit types packed included
    (onnxruntime's numpy bridge has no type for those)."""
    import ctypes

    import onnx

    size = value.tensor_size_in_bytes()
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    return ir.serde.deserialize_tensor(
        onnx.helper.make_tensor("folded", value.element_type(), value.shape(), raw, raw=True)
    )


def fold_in_onnxruntime(model: ir.Model, should_fold: Callable[[ir.Node], bool | None], limit: int) -> int:
    """Replace each node whose inputs are all constant, and that onnxscript left, by its outputs' values."""
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if not _candidate(node, limit) or should_fold(node) is False:
            continue
        alone = _one_node_model(node, dict(model.opset_imports), max(model.ir_version, 4))
        elements = _elements(node, alone)
        results = _run(alone) if elements is not None and elements <= limit else None
        if results is None:
            continue
        graph = node.graph
        produced = [v for v in node.outputs if v.name]
        values = [ir.Value(const_value=tensor) for tensor in results]
        ir.convenience.replace_nodes_and_values(graph, node, [node], [], produced, values)
        for value in values:
            value.const_value.name = value.name
            graph.register_initializer(value)
        count += 1
    return count
