"""Synthetic inputs a model really runs on, so a run without user data still compares the two models.

A symbolic dim gets a concrete size: the leading (batch) dim and an unnamed dim of an otherwise fixed input (a
recurrent state's batch) get 1; a dim shared by name gets one size everywhere; the others are tried from a short
list that fits their role (image height / width, sequence length, anything else), one trial after another,
until onnxruntime runs the original (:func:`runnable`). Values fit what an input feeds: token ids inside the
embedding table they index, masks of ones, a sample rate of 16000, standard normal floats otherwise. The plan
is described in words for the report, so a user sees what the verdict was computed on.

Written here: no library derives runnable inputs from ONNX input specs (Polygraphy's data loader needs the
shapes given, onnxruntime's tools fill symbolic dims with 1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir

from onnxopt.data import Dataset, InputSpec, fits, input_specs
from onnxopt.errors import DataError, UsageError

SYNTHETIC_PREFIX = "synthetic:"  # a dataset source naming synthetic inputs: synthetic:N

#: Sizes tried for a symbolic dim, by role; trial ``i`` takes the ``i``-th of each list (the last when shorter).
#: 640 comes last: a failing trial costs what onnxruntime allocated before it failed, and a model that takes
#: images at all takes one of the smaller sizes (PP-OCR rec rejects every square size above 64).
SPATIAL_SIZES = (224, 320, 256, 128, 64, 48, 32, 640)
SEQUENCE_SIZES = (16, 32, 64, 128, 8)
OTHER_SIZES = (16, 32, 64, 128, 256, 512, 1024, 8)
SAMPLE_RATES = (16000, 8000)
SIZE_TRIALS = max(len(SPATIAL_SIZES), len(SEQUENCE_SIZES), len(OTHER_SIZES))
#: Every size trial with the first sample rate, then with the next: 16 kHz is what most speech models run at.
TRIALS = SIZE_TRIALS * len(SAMPLE_RATES)

_SPATIAL_NAME = re.compile(r"(^|[^a-z])(h|w|height|width|image_width|image_height)([^a-z]|$)", re.I)
_SEQUENCE_NAME = re.compile(r"seq|sequence|length|len|token|time|step", re.I)
_RATE_NAME = re.compile(r"^(sr|sample_?rate|sampling_?rate|rate)$", re.I)
#: Ops an integer input may pass through on its way to the Gather that indexes a table with it.
_TRANSPARENT = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


@dataclass(frozen=True)
class _Fill:
    """How one input's values are made: ``kind`` is normal, ids, ones, zeros, rate or bits."""

    kind: str
    high: int = 2  # ids: exclusive upper bound
    value: int = 0  # rate

    def describe(self) -> str:
        return {
            "normal": "standard normal",
            "ids": f"ids in [0, {self.high})",
            "ones": "ones",
            "zeros": "zeros",
            "rate": f"{self.value}",
            "bits": "random 0 / 1",
        }[self.kind]


@dataclass(frozen=True)
class InputPlan:
    """Concrete shape and value fill of every input, for one trial."""

    shapes: dict[str, tuple[int, ...]]
    fills: dict[str, _Fill]
    batched: frozenset[str]  # inputs whose only symbolic dim is the leading one: ``count`` rows, not whole feeds

    def describe(self, specs: list[InputSpec]) -> str:
        parts = []
        for spec in specs:
            shape = self.shapes[spec.name]
            dims = ("N", *shape[1:]) if spec.name in self.batched else shape
            parts.append(f"{spec.name} [{', '.join(map(str, dims))}] {spec.dtype} {self.fills[spec.name].describe()}")
        return "; ".join(parts)


def _role(spec: InputSpec, position: int, name: str | None) -> tuple[int, ...]:
    if name and _SPATIAL_NAME.search(name):
        return SPATIAL_SIZES
    if name and _SEQUENCE_NAME.search(name):
        return SEQUENCE_SIZES
    rank = len(spec.dims or ())
    if spec.dtype.kind == "f" and rank == 4 and position >= 2:
        return SPATIAL_SIZES
    if (spec.dtype.kind in "iub" and rank == 2 and position == 1) or (rank == 3 and position == 1):
        return SEQUENCE_SIZES
    return OTHER_SIZES


def _dim_name(dim: int | str | None) -> str | None:
    return dim if isinstance(dim, str) and dim not in ("", "?") else None


def plan(model: ir.Model, *, shapes: Mapping[str, tuple[int, ...]] | None = None, trial: int = 0) -> InputPlan:
    """The input shapes and fills of trial ``trial``; ``shapes`` (``--shape``) fixes an input's shape outright."""
    shapes = dict(shapes or {})
    specs = input_specs(model)
    _check_given_shapes(specs, shapes)
    named: dict[str, int] = {}
    concrete: dict[str, tuple[int, ...]] = {}
    batched = set()
    for spec in specs:
        if spec.name in shapes:
            concrete[spec.name] = tuple(shapes[spec.name])
            continue
        dims = spec.dims or ()
        symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
        if symbolic == [0]:
            batched.add(spec.name)
        sizes = []
        for position, dim in enumerate(dims):
            if isinstance(dim, int):
                sizes.append(dim)
                continue
            name = _dim_name(dim)
            if name is not None and name in named:
                sizes.append(named[name])
                continue
            if position == 0 or (name is None and len(symbolic) == 1):
                size = 1  # a batch, or the batch of a state whose other dims are fixed
            else:
                candidates = _role(spec, position, name)
                size = candidates[min(trial % SIZE_TRIALS, len(candidates) - 1)]
            if name is not None:
                named[name] = size
            sizes.append(size)
        concrete[spec.name] = tuple(sizes)
    if any(not isinstance(d, int) for spec in specs if spec.name not in shapes for d in (spec.dims or ())[1:]):
        batched.clear()  # every input is fed whole at batch 1, so inputs sharing a batch dim agree
    fills = {spec.name: _fill(model, spec, trial) for spec in specs}
    return InputPlan(concrete, fills, frozenset(batched))


def _check_given_shapes(specs: list[InputSpec], shapes: Mapping[str, tuple[int, ...]]) -> None:
    unknown = sorted(set(shapes) - {spec.name for spec in specs})
    if unknown:
        raise UsageError(
            f"--shape names unknown input(s) {', '.join(unknown)} (inputs: {', '.join(s.name for s in specs)})"
        )
    for spec in specs:
        if spec.dims is None and spec.name not in shapes:
            raise UsageError(f"input {spec.name!r} has an unknown shape: give --shape {spec.name}=DxD...")
        if spec.name in shapes and spec.dims is not None and not fits(shapes[spec.name], spec.dims):
            shape_text = "x".join(map(str, shapes[spec.name]))
            raise UsageError(f"--shape {spec.name}={shape_text} does not fit the model input {spec.shape_text}")


def _fill(model: ir.Model, spec: InputSpec, trial: int) -> _Fill:
    kind = spec.dtype.kind
    if kind == "f":
        return _Fill("normal")
    if kind == "b":
        return _Fill("ones") if "mask" in spec.name.lower() else _Fill("bits")
    if kind not in "iu":
        raise UsageError(f"cannot make synthetic data of dtype {spec.dtype} (input {spec.name!r}): give --data")
    rows = _table_rows(model, spec.name)
    if rows is not None:
        return _Fill("ids", high=rows)
    if "mask" in spec.name.lower():
        return _Fill("ones")
    if not spec.dims and _RATE_NAME.match(spec.name):
        return _Fill("rate", value=SAMPLE_RATES[trial // SIZE_TRIALS % len(SAMPLE_RATES)])
    return _Fill("bits")


def _table_rows(model: ir.Model, name: str) -> int | None:
    """Rows of the constant table a Gather indexes with input ``name`` (through casts and reshapes), if any."""
    value = next((v for v in model.graph.inputs if v.name == name), None)
    frontier = [value] if value is not None else []
    seen = set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        for node, index in current.uses():
            if node.op_type == "Gather" and index == 1 and node.domain in ("", "ai.onnx"):
                table = node.inputs[0]
                tensor = table.const_value if table is not None else None
                if tensor is not None and tensor.shape is not None and len(tensor.shape) >= 1:
                    axis = node.attributes.get_int("axis", 0)
                    return int(tensor.shape[axis])
            elif node.op_type in _TRANSPARENT and index == 0:
                frontier.extend(node.outputs)
    return None


def _values(shape: tuple[int, ...], dtype: np.dtype, fill: _Fill, rng: np.random.Generator) -> np.ndarray:
    """Values of ``shape``; always an ndarray, a 0-d one for a scalar (onnxruntime refuses numpy scalars)."""
    if fill.kind == "normal":
        values = rng.standard_normal(shape)
    elif fill.kind == "ids":
        values = rng.integers(0, fill.high, size=shape)
    elif fill.kind == "ones":
        values = np.ones(shape)
    elif fill.kind == "zeros":
        values = np.zeros(shape)
    elif fill.kind == "rate":
        values = np.full(shape, fill.value)
    else:
        values = rng.integers(0, 2, size=shape)
    return np.asarray(values, dtype=dtype)


def synthetic(
    count: int,
    model: ir.Model,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    trial: int = 0,
) -> Dataset:
    """``count`` random samples at the shapes of trial ``trial`` (see :func:`plan`).

    Inputs symbolic only in the batch axis get ``count`` rows; the others are ``count`` whole feeds, or the
    same array in every feed beside batched inputs (a scalar sample rate, a state). Random data finds broken
    graphs but says little about accuracy: calibrate on real data.
    """
    chosen = plan(model, shapes=shapes, trial=trial)
    specs = input_specs(model)
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        shape, fill = chosen.shapes[spec.name], chosen.fills[spec.name]
        if spec.name in chosen.batched:
            arrays[spec.name] = _values((count, *shape[1:]), spec.dtype, fill, rng)
        elif chosen.batched or fill.kind == "rate" or not shape:
            arrays[spec.name] = _values(shape, spec.dtype, fill, rng)
        else:
            arrays[spec.name] = _values((count, *shape), spec.dtype, fill, rng)
    # An input of unknown rank takes its --shape as its dims, so each feed is that shape, not rows of it.
    specs = [replace(spec, dims=chosen.shapes[spec.name]) if spec.dims is None else spec for spec in specs]
    dataset = Dataset(f"{SYNTHETIC_PREFIX}{count}", arrays, specs, synthetic=True, batch_size=batch_size)
    dataset.description = chosen.describe(specs)
    return dataset


def runnable(
    count: int,
    model: ir.Model,
    run: Callable[[dict[str, np.ndarray]], object],
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Dataset:
    """The first trial's synthetic dataset whose first feed ``run`` (the original in onnxruntime) accepts.

    Raises :class:`DataError` naming the last failure when no trial runs; the caller reports the model as
    not validated.
    """
    last_error = ""
    tried = set()
    for trial in range(TRIALS):
        dataset = synthetic(count, model, shapes=shapes, seed=seed, batch_size=batch_size, trial=trial)
        if dataset.description in tried:
            continue
        tried.add(dataset.description)
        try:
            run(dataset.first_feed())
        except Exception as exc:  # onnxruntime raises its own types; any failure means "try other sizes"
            last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            continue
        return dataset
    raise DataError(
        f"no runnable synthetic inputs found in {len(tried)} trial(s) (last: {last_error}); "
        f"give --data with real inputs or --shape NAME=DxD for each symbolic input"
    )
