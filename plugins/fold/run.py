"""The fold pass: the enabled steps of :mod:`.steps` in order, repeated until none has anything left to do.

Steps that change the model's interface or IR run once, first; the others run in rounds (each one's output feeds
the next), up to ``max_rounds``, and stop as soon as every step has run once since the last change (the rest of
a round would only confirm it). Each step's count goes to the report under its own name, each rewrite rule's
firings under ``rules``. Imported by the package's ``_create`` when fold runs, so registering the plugin stays light.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxopt import InPlacePluginPass

from . import folding, steps

if TYPE_CHECKING:
    from onnxopt import RunContext

    from . import FoldOptions

Step = tuple[str, Callable[[ir.Model], int]]


class FoldPass(InPlacePluginPass):
    """Runs the enabled steps in rounds until every step has run once since the last change."""

    options: FoldOptions

    def __init__(self, options: FoldOptions, context: RunContext) -> None:
        super().__init__(options, context)
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
             lambda m: folding.fold_constants(m, max_growth_bytes=growth, stats=self.stats)),
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
            self.stats[name] = self.stats.get(name, 0) + changed
        return bool(changed)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for name, step in self._once():
            modified |= self._record(name, step(model))
        cycle = self._rounds()
        runs = quiet = 0  # steps run; steps run since the last one that changed something
        while quiet < len(cycle) and runs < self.options.max_rounds * len(cycle):
            name, step = cycle[runs % len(cycle)]
            runs += 1
            if self._record(name, step(model)):
                modified, quiet = True, 0
            else:
                quiet += 1
        self.stats["rounds"] = max(1, -(-runs // max(1, len(cycle))))  # rounds begun
        if self.fired:
            self.stats["rules"] = dict(self.fired.most_common())
        modified |= self._record("attributes_repaired", steps.check_opset_conformance(model))
        if modified and not self.options.keep_value_info:
            steps.drop_intermediate_shapes(model)
        return ir.passes.PassResult(model, modified)
