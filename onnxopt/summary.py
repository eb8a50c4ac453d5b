"""Figures about a model: what ``onnxopt inspect`` prints and what the report records after each pass.

Counts walk every graph, If / Loop / Scan bodies included, so folding inside subgraphs shows. Per-tensor
sparsity and unique-value counts make pruning and clustering visible; tensors above
``detail_limit`` elements are sampled for unique values rather than sorted whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxopt import model_io

#: Above this many elements, unique values are counted on a strided sample and reported as a lower bound.
UNIQUE_EXACT_LIMIT = 1 << 24


@dataclass
class TensorSummary:
    name: str
    dtype: str
    shape: list[int]
    elements: int
    bytes: int
    sparsity: float
    unique_values: int
    unique_exact: bool


@dataclass
class ModelSummary:
    nodes: int
    parameters: int
    tensor_bytes: int
    file_bytes: int | None = None
    opset: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    subgraphs: int = 0
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    tensors: list[TensorSummary] = field(default_factory=list)


def _op_name(node: ir.Node) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and every subgraph."""
    return sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))


def _constant_node_tensors(model: ir.Model) -> Iterator[ir.TensorProtocol]:
    """The tensor of every Constant node (``value`` attribute), subgraphs included."""
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if (
            node.op_type == "Constant"
            and node.domain in ("", "ai.onnx")
            and (attr := node.attributes.get("value")) is not None
        ):
            yield attr.as_tensor()


def count_parameters(model: ir.Model) -> int:
    """Elements in every initializer and Constant node, subgraphs included.

    Constant nodes count too, so lifting them to initializers does not look like growth.
    """
    initializers = sum(
        value.const_value.size
        for graph in model.graphs()
        for value in graph.initializers.values()
        if value.const_value is not None
    )
    return initializers + sum(tensor.size for tensor in _constant_node_tensors(model))


def count_tensor_bytes(model: ir.Model) -> int:
    """Bytes of every initializer and Constant node tensor: the weights as stored, whichever way a model holds them."""
    return model_io.tensor_bytes(model) + sum(tensor.nbytes for tensor in _constant_node_tensors(model))


def _value_text(value: ir.Value) -> str:
    if (kept := model_io.kept_type_text(value)) is not None:  # a type onnx_ir cannot hold (a ZipMap's map)
        return f"{value.name} {kept}"
    dims = "?" if value.shape is None else "x".join(str(d) for d in value.shape) or "scalar"
    dtype = value.type.dtype.name.lower() if isinstance(value.type, ir.TensorType) else str(value.type)
    return f"{value.name} {dtype}[{dims}]"


def tensor_summary(name: str, tensor: ir.TensorProtocol) -> TensorSummary:
    """Sparsity and unique-value count of one tensor (read from disk if external)."""
    array = tensor.numpy().reshape(-1)
    exact = array.size <= UNIQUE_EXACT_LIMIT
    sample = array if exact else array[:: max(1, array.size // UNIQUE_EXACT_LIMIT)]
    sparsity = float(1.0 - np.count_nonzero(array) / array.size) if array.size else 0.0
    return TensorSummary(
        name=name,
        dtype=tensor.dtype.name.lower(),
        shape=[int(d) for d in tensor.shape],
        elements=int(array.size),
        bytes=int(tensor.nbytes),
        sparsity=sparsity,
        unique_values=int(np.unique(sample).size),
        unique_exact=exact,
    )


def summarize(model: ir.Model, path: str | Path | None = None, *, tensors: bool = True) -> ModelSummary:
    """Op histogram, counts, sizes and (with ``tensors``) per-initializer detail of ``model``."""
    ops: Counter[str] = Counter(_op_name(node) for node in ir.traversal.RecursiveGraphIterator(model.graph))
    dtypes: Counter[str] = Counter()
    tensor_rows = []
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None:
                continue
            dtypes[tensor.dtype.name.lower()] += 1
            if tensors:
                tensor_rows.append(tensor_summary(value.name, tensor))
    return ModelSummary(
        nodes=sum(ops.values()),
        parameters=count_parameters(model),
        tensor_bytes=count_tensor_bytes(model),
        file_bytes=model_io.file_size(path) if path is not None else None,
        opset={domain or "ai.onnx": version for domain, version in model.opset_imports.items()},
        ops=dict(ops.most_common()),
        dtypes=dict(dtypes.most_common()),
        subgraphs=sum(1 for _ in model.graphs()) - 1,
        inputs=[_value_text(v) for v in model.graph.inputs if v.name not in model.graph.initializers],
        outputs=[_value_text(v) for v in model.graph.outputs],
        tensors=tensor_rows,
    )
