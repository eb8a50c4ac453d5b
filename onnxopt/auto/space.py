"""What ``onnxopt auto`` searches: which passes, in which order, with which option values.

The table below names passes and options as the registry spells them; :func:`build_space` keeps only
the passes the loaded plugins registered and the options those passes really have, and checks every
listed value against the option's declared type (a value a pass does not accept is dropped). Where the
table lists no values, they come from the option's type itself (a ``Literal`` or a ``bool``), so a pass
that gains a mode is searched over it without a change here. Ranges (sparsity, k) are the one piece of
knowledge the registry cannot give: they are the useful region of each knob, not its valid region.

Written here (no library describes ONNX pass options); optuna's define-by-run trial does the sampling,
so options that only matter for some values of another (calibration method for static quantization)
are sampled only then.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from typing import Any

from onnxopt.errors import UsageError
from onnxopt.passes import PassRegistry, PassSpec, coerce
from onnxopt.recipe import PassStep

When = tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True)
class Dim:
    """One searched option: categorical ``values``, or a ``low``..``high`` range with ``step``."""

    option: str
    values: tuple[Any, ...] | None = None  # None with no range: every value the option's type allows
    low: float | None = None
    high: float | None = None
    step: float | None = None
    when: When = ()  # sampled only when these options of the same pass took one of these values
    key: str = ""  # parameter name suffix when one option has different ranges under different conditions

    @property
    def param(self) -> str:
        return self.key or self.option


@dataclass(frozen=True)
class PassSpace:
    name: str
    dims: tuple[Dim, ...] = ()
    always: bool = False  # in every candidate (fold)
    on_request: bool = False  # searched only when asked for (distill trains, which takes long)


def _static(*modes: str) -> When:
    return (("mode", modes),)


_magnitude: When = (("kind", ("magnitude",)),)
_structured: When = (("kind", ("structured",)),)


#: The passes in pipeline order: shrink the architecture, zero weights, share values, then lower precision.
DEFAULT_SPACE: tuple[PassSpace, ...] = (
    PassSpace("fold", always=True),
    PassSpace("distill", (Dim("width", (0.25, 0.5, 0.75, 1.0)),), on_request=True),
    PassSpace("prune", (
        Dim("kind", ("magnitude", "structured")),
        Dim("sparsity", low=0.1, high=0.8, step=0.05, when=_magnitude, key="sparsity_magnitude"),
        Dim("scope", when=_magnitude),
        Dim("storage", when=_magnitude),
        Dim("min_elements", (256, 1024, 4096), when=_magnitude),
        Dim("sparsity", low=0.1, high=0.5, step=0.05, when=_structured, key="sparsity_structured"),
        Dim("criterion", when=_structured),
    )),
    PassSpace("cluster", (
        Dim("k", (4, 8, 16, 32, 64, 128, 256)),
        Dim("per_channel"),
        Dim("encoding"),
        Dim("min_elements", (256, 1024, 4096)),
    )),
    PassSpace("quantize", (
        Dim("mode"),
        Dim("method", ("minmax", "entropy", "percentile"), when=_static("static")),
        Dim("accuracy_aware", when=_static("static")),
        Dim("per_channel", when=_static("static", "dynamic")),
        Dim("bits", when=_static("weight_only")),
        Dim("block_size", (32, 64, 128), when=_static("weight_only")),
    )),
)  # fmt: skip


@dataclass(frozen=True)
class ResolvedDim:
    """A dimension checked against the installed pass: concrete choices or a numeric range."""

    param: str
    option: str
    choices: tuple[Any, ...] | None
    low: float | None
    high: float | None
    step: float | None
    integer: bool
    when: When


@dataclass(frozen=True)
class ResolvedPass:
    name: str
    always: bool
    dims: tuple[ResolvedDim, ...]
    defaults: dict[str, Any]


class SearchSpace:
    """The passes and dimensions that survived the registry check, and how to sample a recipe from them."""

    def __init__(self, passes: list[ResolvedPass], notes: list[str]) -> None:
        self.passes = passes
        self.notes = notes

    def sample(self, trial: Any) -> list[PassStep]:
        """The recipe of one optuna trial (``trial.suggest_*`` decides every choice)."""
        steps = []
        for entry in self.passes:
            if not entry.always and not trial.suggest_categorical(entry.name, [False, True]):
                continue
            chosen: dict[str, Any] = {}
            for dim in entry.dims:
                if all(chosen.get(opt, entry.defaults.get(opt)) in allowed for opt, allowed in dim.when):
                    chosen[dim.option] = _suggest(trial, f"{entry.name}.{dim.param}", dim)
            steps.append(PassStep(entry.name, chosen))
        return steps

    def signature(self) -> str:
        """A stable text of the space, stored with the study: a resumed search must search the same space."""
        rows = [
            [p.name, p.always, [[d.param, d.choices, d.low, d.high, d.step, d.when] for d in p.dims]] for p in self.passes
        ]
        return json.dumps(rows, default=str, sort_keys=True)

    def describe(self) -> list[str]:
        lines = []
        for entry in self.passes:
            dims = ", ".join(
                f"{d.param}={'|'.join(map(str, d.choices))}" if d.choices is not None else f"{d.param}={d.low:g}..{d.high:g}"
                for d in entry.dims
            )
            lines.append(f"{entry.name}{' (always)' if entry.always else ''}{': ' + dims if dims else ''}")
        return lines


def _suggest(trial: Any, name: str, dim: ResolvedDim) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(name, list(dim.choices))
    if dim.integer:
        return trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1))
    return trial.suggest_float(name, dim.low, dim.high, step=dim.step)


def _type_choices(tp: Any) -> tuple[Any, ...] | None:
    if tp is bool:
        return (False, True)
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    return None


def _resolve_dim(spec: PassSpec, dim: Dim, types: dict[str, Any], notes: list[str]) -> ResolvedDim | None:
    tp = types.get(dim.option)
    if tp is None:
        notes.append(f"{spec.name}: no option {dim.option!r}, not searched")
        return None
    if dim.low is not None and dim.high is not None:
        try:
            low, high = coerce(dim.low, tp), coerce(dim.high, tp)
        except (TypeError, ValueError):
            notes.append(f"{spec.name}.{dim.option}: not numeric, not searched")
            return None
        return ResolvedDim(dim.param, dim.option, None, low, high, dim.step, tp is int, dim.when)
    wanted = dim.values if dim.values is not None else _type_choices(tp)
    if wanted is None:
        notes.append(f"{spec.name}.{dim.option}: no values to search")
        return None
    valid = []
    for value in wanted:
        try:
            valid.append(coerce(value, tp))
        except (TypeError, ValueError):
            continue
    if len(valid) < 2:
        return None
    return ResolvedDim(dim.param, dim.option, tuple(valid), None, None, None, False, dim.when)


def build_space(
    registry: PassRegistry, *, requested: tuple[str, ...] = (), table: tuple[PassSpace, ...] = DEFAULT_SPACE
) -> SearchSpace:
    """The searchable part of ``table`` given the installed passes; ``requested`` enables on-request passes."""
    passes, notes = [], []
    for entry in table:
        if entry.on_request and entry.name not in requested:
            continue
        if entry.name not in registry:
            if entry.name in requested:
                raise UsageError(f"pass {entry.name!r} was asked for but is not installed (see 'onnxopt passes')")
            notes.append(f"pass {entry.name!r} is not installed, not searched")
            continue
        spec = registry.get(entry.name)
        fields = spec.option_fields()
        types = {f.name: f.type for f in fields}
        dims = tuple(d for d in (_resolve_dim(spec, dim, types, notes) for dim in entry.dims) if d is not None)
        passes.append(ResolvedPass(entry.name, entry.always, dims, {f.name: f.default for f in fields}))
    return SearchSpace(passes, notes)
