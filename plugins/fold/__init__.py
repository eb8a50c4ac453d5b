"""fold: graph simplification that keeps what the model computes, subgraphs included.

Constant folding (shape arithmetic too; what onnxscript's folder cannot evaluate runs alone in onnxruntime,
see :mod:`.evaluate`), Constant nodes lifted to initializers, duplicate initializers
shared, dead nodes / unused initializers / functions / opsets removed, Identity / inference Dropout /
no-op Cast / Expand / Transpose / x*1 / x+0 removed, Reshape / Transpose / Cast chains merged, common
subexpressions shared, BatchNorm / Mul / Add / Pad fused into Conv or Gemm, MatMul + Add into Gemm —
in If / Loop / Scan bodies as well. ``--shape`` shapes the test data only: the written model keeps every
symbolic dim it came with, unless ``fix_input_shapes`` asks for the named inputs' dims to be made static
first (shape computations then fold away, and the model accepts only those sizes). The steps themselves
live in :mod:`.steps`; this module orders them, repeats them until nothing changes, and counts what each
did for the report.

It never grows the model by more than ``max_growth_mib`` through folding, never evaluates a node whose
output would exceed 2^20 elements and its inputs (decided from shapes, before anything is computed), never
emits a node or an attribute outside the model's opset, and leaves ops of unknown domains in place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass

import onnx_ir as ir

from onnxopt import PassSpec, RunContext, SearchHint, hookimpl, option

from . import folding, steps


@dataclass(frozen=True)
class FoldOptions:
    constant_folding: bool = option(True, "fold nodes whose inputs are all constant, shape arithmetic included")
    lift_constants: bool = option(True, "turn Constant nodes into initializers")
    eliminate_no_ops: bool = option(True, "remove Identity, inference Dropout, x*1, x+0, no-op Cast/Expand/Transpose")
    merge_chains: bool = option(True, "merge consecutive Reshape / Transpose / Cast / Unsqueeze, drop no-op Slices")
    fuse_batchnorm: bool = option(True, "fuse BatchNormalization into the Conv / ConvTranspose / Gemm before it")
    fuse_affine: bool = option(True, "fuse Mul/Add by constants and Pad into Conv, MatMul + Add into Gemm")
    cse: bool = option(True, "share identical computations (common-subexpression elimination)")
    remove_unused: bool = option(True, "remove dead nodes, unused initializers, functions and opsets")
    deduplicate: bool = option(True, "share initializers holding the same bytes")
    initializers_out_of_inputs: bool = option(True, "take initializers out of the graph inputs (IR 3 raised to 4)")
    fix_input_shapes: bool = option(False, "make the --shape inputs' dims static in the written model (then it takes only those)")
    keep_value_info: bool = option(False, "keep the inferred shapes of intermediate values in the file")
    max_growth_mib: float = option(1.0, "never let folding add more than this many MiB of constants")
    max_rounds: int = option(4, "repeat the steps until nothing changes, at most this many times")

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        if self.max_growth_mib < 0:
            raise ValueError("max_growth_mib must not be negative")


Step = tuple[str, Callable[[ir.Model], int]]


class FoldPass(ir.passes.InPlacePass):
    """Runs the enabled steps in rounds until a round changes nothing."""

    def __init__(self, options: FoldOptions, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context
        self.fired: Counter[str] = Counter()  # rewrite rule name -> times it fired

    def _once(self) -> list[Step]:
        """Steps that change the model's interface or IR: run once, first."""
        o, found = self.options, []
        if o.fix_input_shapes and self.context.shapes:
            found.append(("input_shapes_fixed", lambda m: steps.fix_input_shapes(m, self.context.shapes)))
        if o.initializers_out_of_inputs:
            found.append(("initializers_taken_out_of_inputs", steps.take_initializers_out_of_inputs))
        if o.lift_constants:
            found.append(("constants_lifted", steps.lift_constants))
        return found

    def _rounds(self) -> list[Step]:
        """Steps repeated until nothing changes; each one's output feeds the next."""
        o = self.options
        growth = int(o.max_growth_mib * 2**20)
        fired = self.fired
        candidates: list[tuple[bool, str, Callable[[ir.Model], int]]] = [
            (o.eliminate_no_ops, "no_ops_removed", partial(steps.remove_no_ops, fired=fired)),
            (o.constant_folding, "constants_folded",
             lambda m: folding.fold_constants(m, max_growth_bytes=growth, stats=self.context.stats)),
            (o.lift_constants, "constants_lifted", steps.lift_constants),
            (o.merge_chains, "chains_merged", partial(steps.merge_chains, fired=fired)),
            (o.fuse_batchnorm, "batchnorm_fused", partial(steps.fuse_batchnorm, fired=fired)),
            (o.fuse_affine, "affine_fused", partial(steps.fuse_into_producers, fired=fired)),
            (o.cse, "subexpressions_shared", steps.eliminate_common_subexpressions),
            (o.remove_unused, "unused_removed", steps.remove_unused),
            (o.deduplicate, "initializers_shared", steps.deduplicate_initializers),
        ]  # fmt: skip
        return [(name, step) for enabled, name, step in candidates if enabled]

    def _record(self, name: str, changed: int) -> bool:
        if changed:
            self.context.stats[name] = self.context.stats.get(name, 0) + changed
        return bool(changed)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for name, step in self._once():
            modified |= self._record(name, step(model))
        for round_number in range(1, self.options.max_rounds + 1):
            changed = False
            for name, step in self._rounds():
                changed |= self._record(name, step(model))
            modified |= changed
            if not changed:
                break
        self.context.stats["rounds"] = round_number
        if self.fired:
            self.context.stats["rules"] = dict(self.fired.most_common())
        modified |= self._record("attributes_repaired", steps.check_opset_conformance(model))
        if modified and not self.options.keep_value_info:
            steps.drop_intermediate_shapes(model)
        return ir.passes.PassResult(model, modified)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="fold",
            summary="constant folding, fusion into Conv/Gemm, no-op and dead-code removal, sharing — subgraphs too",
            create=FoldPass,
            options=FoldOptions,
            search=SearchHint(stage=0, always=True),
        )
    )
