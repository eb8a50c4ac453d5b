"""Step 2 of distillation: which student to train.

- ``""``: the model the pipeline is at (the teacher itself in ``onnxopt distill``, the pruned model after a
  ``prune`` pass in ``optimize``);
- a path to an ``.onnx`` file (e.g. the output of a structured ``prune``);
- ``module:function`` or ``path/to/file.py:function``: a function that takes no arguments and returns an
  untrained framework model (a ``torch.nn.Module`` or a ``keras.Model``);

and, with ``depth < 1``, that ONNX student with some of its repeated encoder layers dropped (:mod:`.depth`:
by default the ones whose absence the teacher's held-out outputs miss least);
with ``width < 1``, narrowed through the registry's ``prune-structured`` pass (sparsity ``1 - width``), its
layers re-fitted to the model it was cut from on the training data unless ``reconstruct`` is off (the start
training needs: PP-OCRv4 rec at 30 % reads no string as cut, two thirds of them re-fitted):
students derived from the teacher automatically. Plugins never import each
other (DESIGN 5c), so ``prune`` is looked up by name and its absence is a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import onnx_ir as ir

from onnxopt import RunContext, UsageError, load, load_function

from .depth import searched, shallower


def from_import_path(text: str) -> Any:
    """Call ``module:function`` (or ``file.py:function``) and return the model it builds."""
    factory = load_function(text)
    try:
        return factory()
    except Exception as exc:
        raise UsageError(f"student {text!r}: {factory.__name__}() raised {type(exc).__name__}: {exc}") from exc


def is_import_path(text: str) -> bool:
    """``module:function`` rather than a file path (a Windows drive letter is one character)."""
    module, sep, function = text.rpartition(":")
    return bool(sep) and len(module) > 1 and function.isidentifier() and not text.endswith(".onnx")


def narrowed(model: ir.Model, width: float, context: RunContext, reconstruct: bool = True) -> ir.Model:
    """``model`` with ``width`` of its channels / hidden units kept, by the registry's structured prune; with
    ``reconstruct``, its layers re-fitted to ``model``'s on the run's data (the training data)."""
    if not context.has_pass("prune-structured"):
        raise UsageError("width < 1 needs the 'prune-structured' pass, which is not installed")
    # round_to=1: the width asked for, not prune's default rounding to kernel-friendly blocks
    result = context.run_pass("prune-structured", model.clone(), sparsity=round(1.0 - width, 6), round_to=1,
                              reconstruct=reconstruct)  # fmt: skip
    context.stats["narrowed_by_prune"] = result.stats
    if not result.modified:
        raise UsageError(f"prune found nothing to narrow at width {width}: give a student instead")
    return result.model


class Student(NamedTuple):
    model: Any  # an onnx_ir.Model, or a framework model
    description: str  # for the report
    #: {a student value: the teacher's value it may be trained towards} (a depth student's kept layers)
    matched_states: dict[str, str]


def resolve(
    text: str,
    current: ir.Model,
    width: float,
    depth: float,
    context: RunContext,
    score: Callable[[ir.Model], float] | None = None,
    reconstruct: bool = True,
) -> Student:
    """The student: an onnx_ir.Model or a framework model, with a short description for the report.

    With ``score`` (how close a candidate's outputs are to the teacher's on held-out rows), a depth < 1 student
    keeps the layers :func:`.depth.searched` finds; without, every other one from the first. ``reconstruct``:
    see :func:`narrowed`."""
    if text and is_import_path(text):
        if width < 1.0 or depth < 1.0:
            raise UsageError(
                "width and depth shrink an ONNX student; a module:function student is built at its own size"
            )
        return Student(from_import_path(text), text, {})
    if text:
        student = load(text, check=False)
        description = Path(text).name
    else:
        student, description = current, "the model in the pipeline"
    matched: dict[str, str] = {}
    if depth < 1.0:
        keep, trail = searched(student, depth, score) if score is not None else (None, None)
        student, found = shallower(student, depth, keep)
        matched = found["matched_states"]
        if trail is not None:
            found["score_after_each_drop"] = [round(value, 4) for value in trail]
        context.stats["shallower"] = found
        description += f", encoder layers {found['kept_layers']} of {found['encoder_layers']} kept"
    if width < 1.0:
        student = narrowed(student, width, context, reconstruct)
        description += f" at width {width:g} (structured prune{', reconstructed' if reconstruct else ''})"
    return Student(student, description, matched)
