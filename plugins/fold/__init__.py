"""fold: graph simplification that keeps what the model computes, subgraphs included.

Constant folding (shape arithmetic too; what onnxscript's folder cannot evaluate runs alone in onnxruntime,
see :mod:`.evaluate`), Constant nodes lifted to initializers, duplicate initializers
shared, dead nodes / unused initializers / functions / opsets removed, Identity / inference Dropout /
no-op Cast / Expand / Transpose / x*1 / x+0 removed, Reshape / Transpose / Cast chains merged, common
subexpressions shared, BatchNorm / Mul / Add / Pad fused into Conv or Gemm, MatMul + Add into Gemm —
in If / Loop / Scan bodies as well. ``--shape`` shapes the test data only: the written model keeps every
symbolic dim it came with, unless ``fix_input_shapes`` asks for the named inputs' dims to be made static
first (shape computations then fold away, and the model accepts only those sizes). The steps themselves
live in :mod:`.steps`; :mod:`.run` orders them, repeats them until nothing changes, and counts what each
did for the report. This module only declares the pass: importing it loads none of onnx_ir, onnxscript,
numpy or onnxruntime (the CLI imports every plugin before it parses), :func:`_create` imports the pass on use.

It never grows the model by more than ``max_growth_mib`` through folding, never evaluates a node whose
output would exceed 2^20 elements and its inputs (decided from shapes, before anything is computed), never
emits a node or an attribute outside the model's opset, and leaves ops of unknown domains in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnxopt import PassOptions, PassSpec, SearchHint, hookimpl, option

if TYPE_CHECKING:
    from onnxopt import RunContext

    from .run import FoldPass


@dataclass(frozen=True)
class FoldOptions(PassOptions):
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
    fix_input_shapes: bool = option(
        False, "make the --shape inputs' dims static in the written model (then it takes only those)"
    )
    keep_value_info: bool = option(False, "keep the inferred shapes of intermediate values in the file")
    max_growth_mib: float = option(1.0, "never let folding add more than this many MiB of constants", ge=0)
    max_rounds: int = option(4, "repeat the steps until nothing changes, at most this many times", ge=1)


def _create(options: FoldOptions, context: RunContext) -> FoldPass:
    from .run import FoldPass  # onnx_ir, onnxscript and numpy load when fold runs, not when the plugin registers

    return FoldPass(options, context)


@hookimpl
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    register(
        PassSpec(
            name="fold",
            summary="constant folding, fusion into Conv/Gemm, no-op and dead-code removal, sharing — subgraphs too",
            create=_create,
            options=FoldOptions,
            search=SearchHint(stage=0, always=True),
        )
    )
