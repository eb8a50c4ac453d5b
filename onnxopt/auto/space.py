"""What ``onnxopt auto`` searches: which passes, in which order, with which option values.

Each pass declares its own search region with a :class:`~onnxopt.passes.SearchHint` on its PassSpec (the
useful range of each knob, its stage in a pipeline), so the host names no pass and no option, and a third
party's pass is searched like a built-in one. :func:`build_space` checks every declared value against the
option's type (a value the pass does not accept is dropped); a dimension without values takes them from the
option's type itself (a ``Literal`` or a ``bool``), so a pass that gains a mode is searched over it. Passes that
replaced the modes of one older pass (``PassSpec.replaces``: quantize, quantize-dynamic, ...) are alternatives:
a candidate gets at most one of them, as it got one mode of the old pass.

Written here (no library describes ONNX pass options); optuna's define-by-run trial does the sampling,
so options that only matter for some values of another (calibration method for static quantization)
are sampled only then.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from onnxopt.errors import UsageError
from onnxopt.passes import PassRegistry, PassSpec, SearchDim, When, coerce
from onnxopt.recipe import PassStep


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
    baselines: tuple[Mapping[str, Any], ...] = ()
    family: str = ""  # passes of one family are alternatives (at most one per candidate)


class SearchSpace:
    """The passes and dimensions that survived the registry check, and how to sample a recipe from them."""

    def __init__(self, passes: list[ResolvedPass], notes: list[str]) -> None:
        self.passes = passes
        self.notes = notes

    def sample(self, trial: Any) -> list[PassStep]:
        """The recipe of one optuna trial (``trial.suggest_*`` decides every choice)."""
        steps, families = [], set()
        for entry in self.passes:
            if entry.family in families:
                continue
            if not entry.always and not trial.suggest_categorical(entry.name, [False, True]):
                continue
            families.add(entry.family)
            chosen: dict[str, Any] = {}
            for dim in entry.dims:
                if all(chosen.get(opt, entry.defaults.get(opt)) in allowed for opt, allowed in dim.when):
                    chosen[dim.option] = _suggest(trial, f"{entry.name}.{dim.param}", dim)
            steps.append(PassStep(entry.name, chosen))
        return steps

    def signature(self) -> str:
        """A stable text of the space, stored with the study: a resumed search must search the same space."""
        rows = [
            [p.name, p.always, [[d.param, d.choices, d.low, d.high, d.step, d.when] for d in p.dims], p.family]
            for p in self.passes
        ]
        return json.dumps(rows, default=str, sort_keys=True)

    def describe(self) -> list[str]:
        lines = []
        for entry in self.passes:
            dims = ", ".join(
                f"{d.param}={'|'.join(map(str, d.choices))}"
                if d.choices is not None
                else f"{d.param}={d.low:g}..{d.high:g}"
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


def _resolve_dim(spec: PassSpec, dim: SearchDim, types: dict[str, Any], notes: list[str]) -> ResolvedDim | None:
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


def build_space(registry: PassRegistry, *, requested: tuple[str, ...] = ()) -> SearchSpace:
    """The search space of the installed passes that declare a :class:`~onnxopt.passes.SearchHint`, in stage
    order; ``requested`` enables on-request passes (distill)."""
    passes, notes = [], []
    for name in requested:
        if name not in registry or registry.get(name).search is None:
            raise UsageError(
                f"pass {name!r} was asked for but no installed pass of that name can be searched (see 'onnxopt passes')"
            )
    searchable = sorted(
        (spec for spec in registry if spec.search is not None), key=lambda spec: (spec.search.stage, spec.name)
    )
    for spec in searchable:
        hint = spec.search
        if hint.on_request and spec.name not in requested:
            continue
        fields = spec.option_fields()
        types = {f.name: f.type for f in fields}
        dims = tuple(d for d in (_resolve_dim(spec, dim, types, notes) for dim in hint.dims) if d is not None)
        family = spec.replaces[0][0] if spec.replaces else spec.name  # the older pass whose modes it took over
        defaults = {f.name: f.default for f in fields}
        passes.append(ResolvedPass(spec.name, hint.always, dims, defaults, hint.baselines, family))
    return SearchSpace(passes, notes)
