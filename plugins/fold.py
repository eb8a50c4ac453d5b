"""fold: graph simplification that keeps what the model computes — constant folding, fusion, clean-up.

Built from well-kept parts rather than written anew: constant folding is onnxscript's optimizer
(``fold_constants``), BatchNorm fusion and inference-Dropout removal are onnxscript rewriter rules, and
identity elimination, dead-node / unused-initializer removal and initializer deduplication are
``onnx_ir.passes.common``. All of them walk If / Loop / Scan bodies. What this module adds is the choice of
steps, their order, and a count of what each step changed for the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir
import onnx_ir.passes.common as common

from onnxopt import PassSpec, RunContext, count_nodes, hookimpl, option


@dataclass(frozen=True)
class FoldOptions:
    constant_folding: bool = option(True, "fold nodes whose inputs are all constant (onnxscript's optimizer)")
    fuse_batchnorm: bool = option(True, "fuse BatchNormalization into the Conv / ConvTranspose / Gemm before it")
    eliminate_identity: bool = option(True, "remove Identity, inference-mode Dropout, x*1, x+0, x-0, x/1")
    remove_unused: bool = option(True, "remove dead nodes, unused initializers, functions and opsets")
    deduplicate: bool = option(True, "share initializers holding the same bytes")


def _rules(names: tuple[str, ...]) -> list:
    from onnxscript.rewriter.rules import common as rules

    return [getattr(rules, name) for name in names]


_BATCHNORM_RULES = ("fuse_batchnorm_into_conv_rule", "fuse_batchnorm_into_conv_transpose_rule", "fuse_batchnorm_into_gemm_rule")
_NO_OP_RULES = ("mul_by_1_rule", "add_0_rule", "sub_0_rule", "div_by_1_rule")


def _apply_rules(model: ir.Model, names: tuple[str, ...]) -> int:
    from onnxscript.rewriter import RewriteRuleSet

    return RewriteRuleSet(_rules(names)).apply_to_model(model)


def _run_ir_pass(model: ir.Model, ir_pass: ir.passes.PassBase) -> int:
    """Run an onnx_ir pass and return how many nodes it removed (at least 1 if it changed anything)."""
    before = count_nodes(model)
    result = ir_pass(model)
    return max(before - count_nodes(model), int(result.modified))


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


def _remove_no_ops(model: ir.Model) -> int:
    """Rewrite inference Dropout, x*1, x+0, x-0, x/1 to Identity, then remove every Identity that can go."""
    rewritten = _inference_dropout_to_identity(model) + _apply_rules(model, _NO_OP_RULES)
    return max(rewritten, _run_ir_pass(model, common.IdentityEliminationPass()))


class FoldPass(ir.passes.InPlacePass):
    """The fold steps, in an order where each one feeds the next."""

    def __init__(self, options: FoldOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    def _steps(self) -> list[tuple[str, Callable[[ir.Model], int]]]:
        o = self.options
        steps: list[tuple[str, Callable[[ir.Model], int]]] = []
        if o.eliminate_identity:
            steps.append(("no_ops_removed", _remove_no_ops))
        if o.constant_folding:
            steps.append(("constants_folded", self._fold_constants))
            if o.eliminate_identity:  # folding turns Constant operands into initializers: x * 1 shows only now
                steps.append(("no_ops_removed", _remove_no_ops))
        if o.fuse_batchnorm:
            steps.append(("batchnorm_fused", lambda m: _apply_rules(m, _BATCHNORM_RULES)))
        if o.remove_unused:
            steps.append(("dead_nodes_removed", lambda m: _run_ir_pass(m, common.RemoveUnusedNodesPass())))
            steps.append(("unused_functions_removed", lambda m: _run_ir_pass(m, common.RemoveUnusedFunctionsPass())))
            steps.append(("unused_opsets_removed", lambda m: int(common.RemoveUnusedOpsetsPass()(m).modified)))
        if o.deduplicate:
            steps.append(("initializers_shared", self._deduplicate))
        return steps

    @staticmethod
    def _fold_constants(model: ir.Model) -> int:
        from onnxscript.optimizer import fold_constants_ir

        before = count_nodes(model)
        result = fold_constants_ir(model)
        common.RemoveUnusedNodesPass()(model)
        return max(before - count_nodes(model), int(result.modified))

    @staticmethod
    def _deduplicate(model: ir.Model) -> int:
        before = sum(len(g.initializers) for g in model.graphs())
        common.DeduplicateInitializersPass()(model)
        return before - sum(len(g.initializers) for g in model.graphs())

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for name, step in self._steps():
            changed = step(model)
            if changed:
                self.context.stats[name] = self.context.stats.get(name, 0) + changed
                modified = True
        return ir.passes.PassResult(model, modified)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="fold",
            summary="constant folding, BatchNorm fusion, identity / dead-node removal, initializer sharing",
            create=FoldPass,
            options=FoldOptions,
        )
    )
