"""An ONNX graph as a trainable ``torch.nn.Module``: how an ONNX student (a pruned teacher, a user's file) trains.

Written here, not taken from onnx2torch: onnx2torch 1.5.15 imports torchvision at import time (for NMS
and RoiAlign), and the torchvision wheels the registry serves do not load beside the pinned torch 2.13.0.
The module interprets the graph node by node; the operators are :mod:`.torch_ops` (float side) and
:mod:`.shape_ops` (shape arithmetic in numpy), and ``torch.onnx.export`` traces the result back to a plain graph.

- Float weights become ``nn.Parameter`` s, initializers and Constant nodes alike (exporters from Paddle keep
  every weight in a Constant node). In training, BatchNormalization normalizes by the batch and updates its
  running statistics, as torch's does; without ``batch_statistics`` it keeps the running statistics it came
  with (PP-OCRv4 rec, reconstructed, fell to one class in its first epoch on rendered text lines with batch
  statistics; PP-OCRv4 det trained frozen quantized far worse: bench/README.md, distill_real.py).
  Not trained by the gradient: BatchNormalization's running statistics and Sub / Div's
  right operand (buffers: input standardization), scalars that only enter arithmetic (hard-swish's 3 and 6,
  a LayerNorm's epsilon), and anything read as a shape / axes / scales value. Integer constants and
  whatever is computed from fixed values alone are folded at construction.
- Shapes computed at run time (``Shape -> Gather -> Concat -> Reshape``) stay numpy values, so a dynamic
  dimension reaches ``torch.export`` as a SymInt expression, not a constant (:mod:`.shape_ops`).
- ``If`` runs the branch its condition picks (a condition known at construction inlines that branch);
  Dropout is the identity (a student trains without it); everything runs in float32.
- Any op outside ``torch_ops.OPS`` is a clear error naming it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from . import shape_ops
from .torch_ops import OPS, STATIC_INPUTS, Op, UnsupportedOp, batch_norm

__all__ = ["OnnxModule", "UnsupportedOp", "supported_ops"]

_BN_STATS = (3, 4)  # BatchNormalization's mean and var inputs
#: ops whose scalar operand is a fixed constant of the formula, not a weight to train
_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Pow", "Clip", "Max", "Min", "Equal", "Where", "Less", "Greater", "Sqrt"}
_SOFTMAX = {"Softmax", "LogSoftmax"}

# a step: (op type, function, input names (None: absent), attributes, output names, If branches or None)
Step = tuple[str, Op | None, list[str | None], dict[str, Any], list[str], Any]


def supported_ops() -> list[str]:
    """Every op type the converter trains (besides Constant)."""
    return sorted({*OPS, "BatchNormalization", "If"})


def _attributes(node: ir.Node) -> dict[str, Any]:
    out = {}
    for name, attr in node.attributes.items():
        value = attr.value
        if attr.type == ir.AttributeType.TENSOR:
            value = value.numpy()
        elif attr.type == ir.AttributeType.GRAPH:
            continue
        elif isinstance(value, (list, tuple)):
            value = list(value)
        out[name] = value
    return out


def _constant_value(node: ir.Node) -> np.ndarray:
    attr = next(iter(node.attributes.values()))
    if attr.type == ir.AttributeType.TENSOR:
        return attr.value.numpy()
    if attr.name in ("value_float", "value_floats"):
        return np.asarray(attr.value, dtype=np.float32)
    if attr.name in ("value_int", "value_ints"):
        return np.asarray(attr.value, dtype=np.int64)
    raise UnsupportedOp(f"Constant with {attr.name} (node {node.name!r})")


def _attribute_name(name: str, index: int) -> str:
    """The ONNX name as a torch attribute name (no dots), numbered so two names never collide; it reappears in
    the exported student's initializer names."""
    return f"{re.sub(r'[^0-9A-Za-z_]', '_', name)[:48]}_{index}"


def _role(value: ir.Value, array: np.ndarray) -> str:
    """How a float constant enters the student: "parameter", "buffer" (fixed tensor) or "static" (folded)."""
    uses = list(value.uses())
    if any((u.node.op_type, u.idx) in STATIC_INPUTS for u in uses):
        return "static"
    if uses and all(u.node.op_type == "BatchNormalization" and u.idx in _BN_STATS for u in uses):
        return "buffer"
    if array.size == 1 and all(u.node.op_type in _ARITHMETIC for u in uses):
        return "static"
    if uses and all(u.node.op_type in ("Sub", "Div") and u.idx == 1 for u in uses):
        return "buffer"
    return "parameter"


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A host value fed to a torch op: floats as float32, integers and booleans as they are."""
    if array.dtype == object:
        return torch.tensor(array.tolist(), dtype=torch.int64)
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype.kind == "f" else array.dtype))


class OnnxModule(torch.nn.Module):
    """``forward(*inputs)`` returns the graph's outputs as a tuple, computed by torch ops on trainable weights."""

    def __init__(self, model: ir.Model, batch_statistics: bool = True) -> None:
        super().__init__()
        graph = model.graph
        self.batch_statistics = batch_statistics
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 21))
        self.input_names = [v.name for v in graph.inputs if v.name not in graph.initializers]
        self.output_names = [v.name for v in graph.outputs]
        self.weights = torch.nn.ParameterDict()
        self._tensor_keys: dict[str, str] = {}  # value name -> parameter or buffer key
        self._statics: dict[str, np.ndarray] = {}  # values known at construction
        self._steps = self._compile(graph)
        self._capture: tuple[str, ...] = ()
        self.captured: dict[str, torch.Tensor] = {}  # the values named by capture(), from the last forward
        missing = [name for name in self.output_names if name in self._statics]
        if missing:
            raise UnsupportedOp(f"output(s) {', '.join(missing)} are constants; nothing to train")

    # construction

    def _constant(self, value: ir.Value, array: np.ndarray) -> None:
        role = _role(value, array) if array.dtype.kind == "f" else "static"
        if role == "static":
            self._statics[value.name] = array
            return
        key = _attribute_name(value.name, len(self._tensor_keys))
        tensor = torch.from_numpy(np.array(array, dtype=np.float32))
        if role == "buffer":
            self.register_buffer(key, tensor)
        else:
            self.weights[key] = torch.nn.Parameter(tensor)
        self._tensor_keys[value.name] = key

    def _compile(self, graph: ir.Graph) -> list[Step]:
        for value in graph.initializers.values():
            self._constant(value, value.const_value.numpy())
        steps: list[Step] = []
        for node in graph:  # onnx_ir keeps nodes in topological order
            self._add(node, steps)
        return steps

    def _add(self, node: ir.Node, steps: list[Step]) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOp(f"op {node.domain}::{node.op_type} (node {node.name!r})")
        if node.op_type == "Constant":
            self._constant(node.outputs[0], _constant_value(node))
            return
        inputs = [None if v is None else v.name for v in node.inputs]
        outputs = [v.name for v in node.outputs]
        if node.op_type == "If":
            self._add_if(node, inputs[0], outputs, steps)
            return
        fn = self._batch_norm if node.op_type == "BatchNormalization" else OPS.get(node.op_type)
        if fn is None:
            raise UnsupportedOp(f"op {node.op_type} (node {node.name!r}); supported: {', '.join(supported_ops())}")
        attrs = _attributes(node)
        if node.op_type in _SOFTMAX and self.opset < 13:
            attrs = {"axis": 1, **attrs, "coerce": True}
        if (
            node.op_type != "BatchNormalization"
            and any(inputs)
            and all(n is None or n in self._statics for n in inputs)
        ):
            values = [None if n is None else self._statics[n] for n in inputs]
            self._store(self._statics, outputs, self._evaluate(node.op_type, fn, values, attrs), host_only=True)
            return
        steps.append((node.op_type, fn, inputs, attrs, outputs, None))

    def _add_if(self, node: ir.Node, condition: str, outputs: list[str], steps: list[Step]) -> None:
        branches = {name: node.attributes[name].value for name in ("then_branch", "else_branch")}
        if condition in self._statics:  # known now: the taken branch is part of the graph
            branch = branches[
                "then_branch" if bool(np.asarray(self._statics[condition]).reshape(-1)[0]) else "else_branch"
            ]
            steps.extend(self._compile(branch))
            for name, result in zip(outputs, branch.outputs):
                steps.append(("Identity", OPS["Identity"], [result.name], {}, [name], None))
            return
        compiled = tuple((self._compile(b), [v.name for v in b.outputs]) for b in branches.values())
        steps.append(("If", None, [condition], {}, outputs, compiled))

    def _batch_norm(self, *args: Any, **attrs: Any) -> torch.Tensor:
        return batch_norm(self.training and self.batch_statistics, *args, **attrs)

    # evaluation (construction-time folding and forward share it)

    @staticmethod
    def _evaluate(op: str, fn: Op, values: list[Any], attrs: dict[str, Any]) -> Any:
        host = all(v is None or isinstance(v, np.ndarray) for v in values)
        symbolic_size = any(
            i < len(values) and values[i] is not None and values[i].dtype == object for i in shape_ops.SIZED.get(op, ())
        )
        if host and op in shape_ops.OPS and not symbolic_size:
            return shape_ops.OPS[op](*values, **attrs)
        args = [
            v if v is None or torch.is_tensor(v) or (op, i) in STATIC_INPUTS else _tensor(v)
            for i, v in enumerate(values)
        ]
        result = fn(*args, **attrs)
        if op == "Shape":
            return shape_ops.host(result)
        if op == "Size":
            return np.asarray(result, dtype=object if not isinstance(result, int) else np.int64)
        return result

    @staticmethod
    def _store(env: dict[str, Any], outputs: list[str], result: Any, *, host_only: bool = False) -> None:
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(outputs, results):
            if name:
                env[name] = value.detach().numpy() if host_only and torch.is_tensor(value) else value

    def _run(self, steps: list[Step], env: dict[str, Any]) -> None:
        for op, fn, inputs, attrs, outputs, branches in steps:
            if op == "If":
                flag = env[inputs[0]]
                flag = (
                    bool(np.asarray(flag).reshape(-1)[0]) if isinstance(flag, np.ndarray) else bool(flag.reshape(-1)[0])
                )
                branch_steps, branch_outputs = branches[0] if flag else branches[1]
                local = dict(env)
                self._run(branch_steps, local)
                self._store(env, outputs, tuple(local[name] for name in branch_outputs))
                continue
            values = [None if name is None else env[name] for name in inputs]
            self._store(env, outputs, self._evaluate(op, fn, values, attrs))

    def log_softmax_output(self, name: str, enabled: bool = True) -> bool:
        """Compute output ``name`` as log-probabilities (its Softmax as LogSoftmax) while ``enabled``, restored
        when not; returns whether a Softmax makes that output.

        Training on log-probabilities through the Softmax (log of a clamped probability) loses every class whose
        probability underflows: its gradient is zero, and a pruned model often starts so (bench/README.md,
        distill_real). LogSoftmax has the full gradient everywhere, and the same values where the log is finite."""
        for index, (op, _, inputs, attrs, outputs, branches) in enumerate(self._steps):
            if op == "Softmax" and name in outputs:
                fn = OPS["LogSoftmax"] if enabled else OPS["Softmax"]
                self._steps[index] = (op, fn, inputs, attrs, outputs, branches)
                return True
        return False

    def capture(self, names: tuple[str, ...]) -> None:
        """Keep the values ``names`` (computed by the top-level graph) in :attr:`captured` after each forward (a
        trainer reads hidden states there); ``()`` stops it, as export needs."""
        computed = {name for step in self._steps for name in step[4]}
        missing = [name for name in names if name not in computed]
        if missing:
            raise UnsupportedOp(f"the student computes no value {missing[0]!r} to train towards the teacher's")
        self._capture, self.captured = tuple(names), {}

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(self._statics)
        env.update(zip(self.input_names, inputs))
        params = dict(self.weights.items())
        for name, key in self._tensor_keys.items():
            env[name] = params[key] if key in params else getattr(self, key)
        self._run(self._steps, env)
        if self._capture:
            self.captured = {name: env[name] for name in self._capture}
        return tuple(_tensor(env[n]) if isinstance(env[n], np.ndarray) else env[n] for n in self.output_names)
