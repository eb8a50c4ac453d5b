"""Constant folding with onnxscript's folder, bounded in size, memory and time.

onnxscript's folder (``onnxscript.optimizer.fold_constants_ir``) does the folding, shape arithmetic included;
written here is what a model that is deployed needs around it: the result weighed on a clone against a growth
budget (a 9 KB model whose weights come from ConstantOfShape became 513-575 MB in onnxslim, onnxsim and
onnxruntime's offline optimizer), each node's output size decided from shapes before it is evaluated, op types
whose folding raises worked around instead of failing the pass, the folder's two quadratic steps turned off
(:mod:`.onnxscript_adapter`, the one place that touches onnxscript's private parts), and the nodes it cannot
evaluate handed to :mod:`.evaluate`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from functools import partial

import onnx_ir as ir

from onnxopt import count_nodes

from .onnxscript_adapter import linear_folder
from .steps import FoldError, remove_unused

#: Ops whose output can be far larger than their inputs: the first ones the size guard stops folding.
GROWING_OPS = frozenset(
    {"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "OneHot", "EyeLike", "Pad", "Gather"}
)


def constant_bytes(model: ir.Model) -> int:
    """Bytes held by initializers and Constant nodes, in every graph."""
    total = sum(
        v.const_value.nbytes for g in model.graphs() for v in g.initializers.values() if v.const_value is not None
    )
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type == "Constant" and (attr := node.attributes.get("value")) is not None:
            total += attr.as_tensor().nbytes
    return total


def forget_inferred_shapes(model: ir.Model) -> dict[ir.Value, ir.Shape | None]:
    """Drop the shapes of intermediate values so folding uses what the graph computes, not what it declares.

    A wrong declared shape (in value_info or on a graph output) once let onnxslim fold a final Reshape to the
    wrong shape. Returns the graph outputs' declared shapes so the caller can restore the interface.
    """
    declared = {value: value.shape for value in model.graph.outputs}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for value in node.outputs:
            value.shape = None
    return declared


#: A constant at least this large that feeds several nodes is not folded into a copy of itself.
SHARED_CONSTANT_BYTES = 64 * 1024


def _would_duplicate(node: ir.Node) -> bool:
    """Folding a node that reads a large constant shared with other nodes adds a transformed copy of it."""
    return any(
        value is not None and value.const_value is not None
        and value.const_value.nbytes >= SHARED_CONSTANT_BYTES and len(value.uses()) > 1
        for value in node.inputs
    )  # fmt: skip


#: onnxscript never folds ConstantOfShape; one this small (a mask, a pad amount) is worth folding.
SMALL_GENERATED_ELEMENTS = 1024

#: onnxscript weighs a folded tensor only after computing it: a 200-byte Expand to 2^28 elements took 2.2 GiB
#: to be thrown away. A node whose output would be larger than this, and larger than its inputs, is never
#: evaluated (onnxscript would discard the result anyway).
FOLDED_ELEMENTS_LIMIT = 1 << 20


def _ints(value: ir.Value | None) -> list[int] | None:
    tensor = ir.convenience.get_const_tensor(value) if value is not None else None
    return None if tensor is None else [int(v) for v in tensor.numpy().reshape(-1).tolist()]


def _const_dims(value: ir.Value | None) -> list[int] | None:
    return None if value is None or value.const_value is None else [int(d) for d in value.const_value.shape]


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    a, b = [1] * (len(b) - len(a)) + a, [1] * (len(a) - len(b)) + b
    return [y if x == 1 else x for x, y in zip(a, b)]


def _generated_elements(node: ir.Node) -> int | None:
    """Elements ConstantOfShape / Expand / Tile / Range would produce, from their constant inputs alone."""
    op, inputs = node.op_type, node.inputs
    if op == "ConstantOfShape" and inputs:
        shape = _ints(inputs[0])
        return None if shape is None else math.prod(shape)
    if op in ("Expand", "Tile") and len(inputs) == 2:
        dims, second = _const_dims(inputs[0]), _ints(inputs[1])
        if dims is None or second is None:
            return None
        if op == "Expand":
            return math.prod(_broadcast(dims, second))
        return math.prod(d * r for d, r in zip(dims, second)) if len(dims) == len(second) else None
    if op == "Range" and len(inputs) == 3:
        scalars = [ir.convenience.get_const_tensor(v) if v is not None else None for v in inputs]
        if any(t is None or t.size != 1 for t in scalars):
            return None
        start, limit, delta = (float(t.numpy().reshape(-1)[0]) for t in scalars)
        if delta == 0 or not math.isfinite(start + limit + delta):
            return None
        return max(math.ceil((limit - start) / delta), 0)
    return None


def output_elements(node: ir.Node) -> int | None:
    """Elements a node would produce, known before evaluating it: from its constant inputs for the ops that
    generate tensors, else from the outputs' inferred static shapes; None when unknown."""
    if node.domain in ("", "ai.onnx"):
        generated = _generated_elements(node)
        if generated is not None:
            return generated
    shapes = [value.shape for value in node.outputs if value.name]  # an unnamed output is not produced
    if not shapes or any(s is None or not all(isinstance(d, int) for d in s) for s in shapes):
        return None
    return sum(math.prod(s) for s in shapes)


def _too_large(node: ir.Node) -> bool:
    elements = output_elements(node)
    if elements is None or elements <= FOLDED_ELEMENTS_LIMIT:
        return False
    read = sum(v.const_value.size for v in node.inputs if v is not None and v.const_value is not None)
    return elements > read


def _small_generator(node: ir.Node) -> bool:
    if node.op_type != "ConstantOfShape" or node.domain not in ("", "ai.onnx"):
        return False
    elements = _generated_elements(node)
    return elements is not None and elements <= SMALL_GENERATED_ELEMENTS


def _random_dropout(node: ir.Node) -> bool:
    """Dropout in training mode draws a random mask: onnxscript 0.7.2 folds it once its mask output is unused."""
    training = node.inputs[2] if node.op_type == "Dropout" and len(node.inputs) > 2 else None
    flag = ir.convenience.get_const_tensor(training) if training is not None else None
    return flag is not None and bool(flag.numpy())


def _should_fold(node: ir.Node, *, keep_shared: bool = False, keep_generators: bool = False) -> bool | None:
    """onnxscript's ``should_fold``: False leaves the node, True folds it, None lets onnxscript's rules decide."""
    if _too_large(node) or _random_dropout(node):
        return False
    if _small_generator(node):
        return True
    if (keep_shared and _would_duplicate(node)) or (keep_generators and node.op_type in GROWING_OPS):
        return False
    return None


def fold_constants(model: ir.Model, *, max_growth_bytes: int, stats: dict) -> int:
    """onnxscript's constant folding (shape arithmetic included), never growing the model past the budget.

    Folds on a clone and weighs the result: if the constants grew by more than ``max_growth_bytes`` (a 9 KB
    model whose weights come from ConstantOfShape became 513-575 MB in onnxslim, onnxsim and onnxruntime's
    offline optimizer), it folds again without turning large shared constants into transformed copies,
    then also leaving the ops that generate large tensors alone, and if that still grows too much, it does
    not fold at all. What happened is recorded in ``stats``.
    """
    before_bytes = constant_bytes(model)
    for should_fold in (_should_fold, partial(_should_fold, keep_shared=True),
                        partial(_should_fold, keep_shared=True, keep_generators=True)):  # fmt: skip
        trial, changed = _fold_clone(model, should_fold, stats)
        growth = constant_bytes(trial) - before_bytes
        if growth <= max_growth_bytes:
            _adopt(model, trial)
            return changed
        stats["size_guard"] = f"folding would add {growth / 2**20:.1f} MiB; folded less"
    stats["size_guard"] = "folding would grow the model past the limit; nothing folded"
    return 0


#: Nodes moved to this domain are invisible to onnxscript's folder (it skips domains the model does not import);
#: :mod:`.evaluate` still runs them, as the standard ops they are.
HIDDEN_DOMAIN = "onnxopt.fold.hidden"
_MAX_FOLD_ATTEMPTS = 8


def _hidden(node: ir.Node, op_types: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in op_types:
        return True
    # onnxscript 0.7.2 rewrites CastLike to Cast and drops saturate=0: out-of-range float8 values saturate
    return node.op_type == "CastLike" and node.attributes.get_int("saturate", 1) == 0


@contextlib.contextmanager
def _hidden_from_folder(model: ir.Model, op_types: set[str]) -> Iterator[None]:
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if _hidden(node, op_types):
            node.domain = HIDDEN_DOMAIN
    try:
        yield
    finally:
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.domain == HIDDEN_DOMAIN:
                node.domain = ""


def _fold_clone(model: ir.Model, should_fold, stats: dict) -> tuple[ir.Model, int]:
    """Fold a clone of ``model``; an op type whose folding raises is left alone and the fold retried.

    onnxscript's folder stops the whole pass on one node's error (SplitToSequence with an unknown scalar
    split, in onnx's node tests); fold must work around such nodes, never fail on them.
    """
    skipped: set[str] = set()
    for _ in range(_MAX_FOLD_ATTEMPTS):
        trial = model.clone()
        declared = forget_inferred_shapes(trial)
        try:
            with _hidden_from_folder(trial, skipped):
                changed = _fold_to_fixpoint(trial, should_fold)
        except RuntimeError as exc:
            op_type = _failing_op_type(exc)
            if op_type is None or op_type in skipped:
                raise
            skipped.add(op_type)
            stats["folding_skipped_ops"] = sorted(skipped)
            continue
        for value, shape in declared.items():
            value.shape = shape if shape is not None else value.shape
        return trial, changed
    raise FoldError(f"constant folding kept failing; skipped {sorted(skipped)}")


def _failing_op_type(exc: RuntimeError) -> str | None:
    """The op type in onnxscript's "Error during constant folding for node 'n' (domain::Op)"."""
    match = re.search(r"Error during constant folding for node .*\((?:ai\.onnx)?::(\w+)\)$", str(exc))
    return match.group(1) if match else None


def _fold_to_fixpoint(model: ir.Model, should_fold, max_passes: int = 4) -> int:
    """Fold until nothing changes: nodes an If inlined in one pass fold in the next, before growth is weighed."""
    total = 0
    for _ in range(max_passes):
        changed = _fold_once(model, should_fold)
        if not changed:
            break
        total += changed
    return total


#: onnx 1.23's reference Cast (onnxscript folds with it) wraps out-of-range values to 0 in these types where the
#: standard and onnxruntime saturate / wrap modulo 2^bits (node tests test_cast*_to_INT4 and the like).
_REFERENCE_CAST_DIFFERS = frozenset({ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT2, ir.DataType.UINT2,
                                     ir.DataType.FLOAT4E2M1})  # fmt: skip


def _folded_by_onnxruntime_only(node: ir.Node) -> bool:
    """A node onnx's reference implementation computes differently from onnxruntime: left to :mod:`.evaluate`."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Cast", "CastLike"):
        return False
    if node.op_type == "Cast":
        target = node.attributes.get_int("to")
        return target is not None and ir.DataType(target) in _REFERENCE_CAST_DIFFERS
    like = node.inputs[1] if len(node.inputs) > 1 else None
    return like is not None and like.dtype in _REFERENCE_CAST_DIFFERS


def _fold_once(model: ir.Model, should_fold) -> int:
    from onnxscript.optimizer import fold_constants_ir

    from .evaluate import fold_in_onnxruntime  # it reads this module's size rules

    before = count_nodes(model)
    with linear_folder():
        result = fold_constants_ir(
            model, onnx_shape_inference=True, input_size_limit=FOLDED_ELEMENTS_LIMIT,
            output_size_limit=FOLDED_ELEMENTS_LIMIT,
            should_fold=lambda node: False if _folded_by_onnxruntime_only(node) else should_fold(node),
        )  # fmt: skip
    evaluated = fold_in_onnxruntime(model, should_fold, FOLDED_ELEMENTS_LIMIT)
    remove_unused(model)  # folded-away inputs must go before the size guard weighs the result
    return max(before - count_nodes(model), int(result.modified), evaluated)


def _adopt(model: ir.Model, trial: ir.Model) -> None:
    """Make ``model`` (the object the pipeline holds) carry ``trial``'s graph."""
    model.graph = trial.graph
    model.functions.clear()
    model.functions.update(trial.functions)
