"""The individual fold steps. Each takes the model, changes it in place, and returns how much it changed.

Taken from well-kept libraries where they do the job: onnxscript's rewrite rules (BatchNorm / affine / Pad
fusion into Conv, Cast / Reshape / Transpose / Expand no-ops and merges), its rewriter running fold's own rules
(MatMul + Add into Gemm only where Gemm computes the same, the chain merges of :mod:`.chains`) and
``onnx_ir.passes.common`` (identity elimination, CSE, unused-node removal, initializer deduplication, constant
lifting). Written here, because no library does them the way a deployed model needs: inference-Dropout
removal in its common form, fixing input shapes on request, the IR-3 upgrade that takes initializers out of
the inputs, and the opset conformance check that keeps every emitted node and attribute inside the model's
opset. Constant folding, with its bounds, is :mod:`.folding`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common

from onnxopt import count_nodes


class FoldError(RuntimeError):
    """Fold produced something the model's opset cannot express; the host rolls the pass back."""


def _rules(*names: str) -> list[tuple[str, object]]:
    """onnxscript's common rewrite rules by attribute name, named for the report without the ``_rule`` suffix."""
    from onnxscript.rewriter.rules import common as rules

    return [(name.removesuffix("_rule"), getattr(rules, name)) for name in names]


def apply_rules(model: ir.Model, rules: list[tuple[str, object]], fired: Counter[str] | None = None) -> int:
    """Apply named onnxscript rewrite rules everywhere, subgraphs included; count each one's firings in ``fired``."""
    from onnxscript.rewriter import RewriteRuleSet

    total = 0
    for name, rule in rules:
        count = RewriteRuleSet([rule], commute=True).apply_to_model(model)
        if count and fired is not None:
            fired[name] += count
        total += count
    return total


def run_ir_pass(model: ir.Model, ir_pass: ir.passes.PassBase) -> int:
    """Run an onnx_ir pass; return the nodes it removed (at least 1 if it changed anything)."""
    before = count_nodes(model)
    result = ir_pass(model)
    return max(before - count_nodes(model), int(result.modified))


def default_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


# --- interface and IR ----------------------------------------------------------------------------------


def fix_input_shapes(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Make the named inputs' symbolic dims static so shape arithmetic can fold away."""
    count = 0
    for value in model.graph.inputs:
        shape = shapes.get(value.name)
        if shape is None:
            continue
        if value.shape is not None and len(value.shape) != len(shape):
            raise FoldError(
                f"--shape {value.name}: rank {len(shape)} does not match the input's rank {len(value.shape)}"
            )
        if value.shape is None or any(not isinstance(d, int) for d in value.shape):
            value.shape = ir.Shape(shape)
            count += 1
    return count


def take_initializers_out_of_inputs(model: ir.Model) -> int:
    """IR >= 4: initializers listed as graph inputs become overridable, and onnxruntime stops folding them.

    An IR-3 model is raised to IR 4 at the same time (it must be, for folding to create initializers that
    are not inputs), which is what onnxoptimizer did without taking them out of the inputs: 1.27x slower.
    """
    moved = 0
    for graph in model.graphs():
        keep = [v for v in graph.inputs if v.name not in graph.initializers]
        moved += len(graph.inputs) - len(keep)
        if len(keep) != len(graph.inputs):
            graph.inputs.clear()
            graph.inputs.extend(keep)
    if model.ir_version < 4:
        model.ir_version = 4
        moved = max(moved, 1)
    return moved


# --- clean-up --------------------------------------------------------------------------------------------


def _inference_dropout_to_identity(model: ir.Model) -> int:
    """Dropout outside training is the identity; onnxscript's rules miss the common form without optional inputs."""
    count = 0
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.op_type != "Dropout" or node.domain not in ("", "ai.onnx"):
            continue
        training = node.inputs[2] if len(node.inputs) > 2 else None
        if training is not None:
            flag = ir.convenience.get_const_tensor(training)
            if flag is None or bool(flag.numpy()):
                continue
        mask = node.outputs[1] if len(node.outputs) > 1 else None
        if mask is not None and (mask.uses() or mask.is_graph_output()):
            continue
        identity = ir.node("Identity", inputs=[node.inputs[0]])
        ir.convenience.replace_nodes_and_values(
            node.graph, node, [node], [identity], [node.outputs[0]], [identity.outputs[0]]
        )
        count += 1
    return count


NO_OP_RULES = ("mul_by_1_rule", "add_0_rule", "sub_0_rule", "div_by_1_rule", "dropout_zero_rule",
               "dropout_inference_rule", "no_op_cast_rule", "no_op_expand_rule", "no_op_transpose_rule")  # fmt: skip


class _IdentityElimination(common.IdentityEliminationPass):
    """onnx_ir's identity elimination, keeping an Identity that is the only thing making a graph output.

    onnx_ir 1.1.0 removes an Identity between a value of another graph (an outer scope, as in silero-vad's
    nested If branches) or another graph output and this graph's output, and then fails: a value can be
    the output of one graph only.
    """

    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:
        source = node.inputs[0] if node.op_type == "Identity" and len(node.inputs) == 1 else None
        if source is not None and node.outputs[0].is_graph_output():
            producer = source.producer()
            if source.is_graph_output() or producer is None or producer.graph is not node.graph:
                return False
        return super()._try_eliminate_identity_node(node)


def remove_no_ops(model: ir.Model, fired: Counter[str] | None = None) -> int:
    """Rewrite inference Dropout, x*1, x+0, x-0, x/1, no-op Cast / Expand / Transpose to Identity; drop Identities."""
    rewritten = _inference_dropout_to_identity(model) + apply_rules(model, _rules(*NO_OP_RULES), fired)
    return max(rewritten, run_ir_pass(model, _IdentityElimination()))


MERGE_RULES = ("cast_cast_rule", "reshape_reshape_rule", "transpose_transpose_rule", "unsqueeze_unsqueeze_rule",
               "squeeze_reshape_1d_rule", "collapse_slice_rule", "collapse_slice2_rule")  # fmt: skip


def merge_chains(model: ir.Model, fired: Counter[str] | None = None) -> int:
    """Merge consecutive Reshapes / Transposes / Unsqueezes / Casts, cancel Transpose pairs, drop no-op Slices."""
    from .chains import RULES

    return apply_rules(model, _rules(*MERGE_RULES) + list(RULES), fired)


def lift_constants(model: ir.Model) -> int:
    """Constant nodes become initializers (deduplicated and visible to onnxruntime's own folding)."""
    before = count_nodes(model)
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    return before - count_nodes(model)


def _remove_unreferenced_initializers(model: ir.Model) -> int:
    """Initializers no live node reads, in every graph.

    onnx_ir's RemoveUnusedNodesPass leaves them in If / Loop / Scan bodies, and counts as uses the nodes of
    a branch that constant folding discarded (an If with a constant condition), so silero-vad kept LSTM
    weights that only a dead branch still referenced.
    """
    live = {id(node) for node in ir.traversal.RecursiveGraphIterator(model.graph)}
    removed = 0
    for graph in model.graphs():
        inputs = set(graph.inputs)
        for name, value in list(graph.initializers.items()):
            if value.is_graph_output() or value in inputs:
                continue
            if not any(id(use.node) in live for use in value.uses()):
                del graph.initializers[name]
                removed += 1
    return removed


def remove_unused(model: ir.Model) -> int:
    removed = run_ir_pass(model, common.RemoveUnusedNodesPass())
    removed += _remove_unreferenced_initializers(model)
    removed += run_ir_pass(model, common.RemoveUnusedFunctionsPass())
    imports = dict(model.opset_imports)
    removed += int(common.RemoveUnusedOpsetsPass()(model).modified)
    if not model.opset_imports:  # every node folded: onnxruntime refuses a model that imports no opset at all
        model.opset_imports.update(imports)
    return removed


def eliminate_common_subexpressions(model: ir.Model) -> int:
    return run_ir_pass(model, common.CommonSubexpressionEliminationPass())


def deduplicate_initializers(model: ir.Model) -> int:
    before = sum(len(g.initializers) for g in model.graphs())
    common.DeduplicateInitializersPass()(model)
    return before - sum(len(g.initializers) for g in model.graphs())


# --- fusion ----------------------------------------------------------------------------------------------


_GEMM_TYPES = (ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _rank(value: ir.Value | None) -> int | None:
    return None if value is None or value.shape is None else len(value.shape)


def _gemm_computes_the_same(context, a: ir.Value, b: ir.Value, bias: ir.Value, **_) -> bool:
    """2-D float operands, and a bias that broadcasts to the [M, N] result without raising its rank."""
    return _rank(a) == 2 and _rank(b) == 2 and _rank(bias) in (0, 1, 2) and a.dtype in _GEMM_TYPES


def _matmul_add_to_gemm_rules() -> list[tuple[str, object]]:
    """``Add(MatMul(a, b), bias)`` -> ``Gemm(a, b, bias)`` where Gemm computes the same thing (onnxscript's own
    rule also fuses integer MatMuls, and biases of any rank)."""
    from onnxscript.rewriter.pattern import RewriteRule

    def matmul_add(op, a, b, bias):
        return op.Add(op.MatMul(a, b), bias)

    def gemm(op, a, b, bias):
        return op.Gemm(a, b, bias)

    return [("matmul_add_to_gemm", RewriteRule(matmul_add, gemm, _gemm_computes_the_same, name="matmul_add_to_gemm"))]


FUSION_RULES = ("fuse_batchnorm_into_conv_rule", "fuse_batchnorm_into_conv_transpose_rule",
                "fuse_batchnorm_into_gemm_rule", "affine_conv_fusion_rule",
                "normalize_pad_format_conv_rule", "fuse_pad_into_conv_rule")  # fmt: skip


def fuse_batchnorm(model: ir.Model, fired: Counter[str] | None = None) -> int:
    return apply_rules(model, _rules(*FUSION_RULES[:3]), fired)


def fuse_into_producers(model: ir.Model, fired: Counter[str] | None = None) -> int:
    """Mul / Add by constants into Conv / ConvTranspose / Gemm, Pad into Conv, MatMul + Add into Gemm."""
    from .affine import fold_affine_into_producers

    fused = apply_rules(model, _rules(*FUSION_RULES[3:]) + _matmul_add_to_gemm_rules(), fired)
    affine = fold_affine_into_producers(model)
    if affine and fired is not None:
        fired["affine_into_weights"] += affine
    return fused + affine


# --- what folding leaves behind ----------------------------------------------------------------------


def drop_intermediate_shapes(model: ir.Model) -> int:
    """Forget the types and shapes of values inside the graph: onnxruntime infers them again at load, and
    kept they fill the file with value_info. Graph inputs and outputs keep their declared types."""
    dropped = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for value in node.outputs:
            if not value.is_graph_output() and (value.type is not None or value.shape is not None):
                value.type = value.shape = None
                dropped += 1
    return dropped


# --- conformance -----------------------------------------------------------------------------------------


def check_opset_conformance(model: ir.Model) -> int:
    """Every default-domain node and attribute must exist in the model's opset.

    onnxscript's rules can emit Reshape's ``allowzero`` (opset 14) into an opset-12 model, which then will
    not load. Where that attribute changes nothing (no zero in the constant target shape) it is dropped;
    anything else raises FoldError, and the host rolls the pass back rather than write such a model.
    """
    opset = default_opset(model)
    repaired = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            raise FoldError(f"fold emitted {node.op_type}, which opset {opset} does not have") from None
        for name in list(node.attributes):
            if name in schema.attributes:
                continue
            if node.op_type == "Reshape" and name == "allowzero" and _no_zero_in_shape(node):
                del node.attributes[name]
                repaired += 1
                continue
            raise FoldError(f"fold emitted {node.op_type} attribute {name!r}, which opset {opset} does not have")
    return repaired


def _no_zero_in_shape(node: ir.Node) -> bool:
    target = ir.convenience.get_const_tensor(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] else None
    return target is not None and 0 not in target.numpy().tolist()
