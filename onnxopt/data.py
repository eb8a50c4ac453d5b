"""Datasets that feed a model: ``.npz`` files, folders of ``.npy`` / ``.npz`` files, and synthetic inputs.

Layout (what a user puts in ``calib.npz``): one array per model input, keyed by the input's name, plus an
optional ``labels`` array of class ids. Samples are stacked on the model input's leading (batch) axis:

- an input ``[batch, 3, 32, 32]`` takes an array ``[N, 3, 32, 32]``, fed ``batch_size`` rows at a time (by
  default as many as fit in :data:`FEED_INPUT_BYTES`, at most 32: a model's activations are many times its
  inputs, and 32 rows of a 640x640 image are gigabytes of them), or, when the model fixes the batch dimension
  to ``d``, ``d`` rows at a time;
- an array with one axis more than the input (``[F, 1, 3, 32, 32]`` for an input ``[1, 3, 32, 32]``) holds
  ``F`` whole feeds, fed one after another;
- an array exactly the shape of an input with a fixed leading dimension (a state ``[2, 1, 128]``, a
  scalar sample rate) is the same in every feed.

Everything loads with ``allow_pickle=False``; a wrong name, dtype or shape is a :class:`DataError` naming
the input. Written here: no library knows ONNX input specs and this layout.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxopt.errors import DataError, UsageError

LABELS_KEY = "labels"
DEFAULT_BATCH_SIZE = 32
#: Input bytes of one feed when the batch size is left to the data (``batch_size=None``).
FEED_INPUT_BYTES = 4 << 20

Dims = tuple[int | str | None, ...]


@dataclass(frozen=True)
class InputSpec:
    """A model input as the data layer sees it: name, numpy dtype and dims (int, or a name / None if symbolic)."""

    name: str
    dtype: np.dtype
    dims: Dims | None  # None: rank unknown

    @property
    def shape_text(self) -> str:
        if self.dims is None:
            return "unknown shape"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.dims) + "]"


def _dim(dim: int | ir.SymbolicDim) -> int | str | None:
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    return dim.value if isinstance(dim, ir.SymbolicDim) else None


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The inputs a caller must feed (graph inputs that are not also initializers)."""
    specs = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        if not isinstance(value.type, ir.TensorType):
            raise DataError(f"input {value.name!r} is a {value.type}, only tensor inputs can be fed")
        dims = None
        if value.shape is not None:  # an exporter's -1 means "any size", like a named or unnamed symbolic dim
            dims = tuple(_dim(d) for d in value.shape)
        specs.append(InputSpec(value.name, np.dtype(value.type.dtype.numpy()), dims))
    return specs


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` (``NAME=`` alone for a scalar)."""
    name, sep, dims = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--shape {text!r}: expected NAME=DxDxD, e.g. input=1x3x224x224")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        raise UsageError(f"--shape {text!r}: dimensions must be integers separated by 'x'") from None
    if any(d <= 0 for d in shape):
        raise UsageError(f"--shape {text!r}: dimensions must be positive")
    return name, shape


def fits(shape: tuple[int, ...], dims: Dims) -> bool:
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for s, d in zip(shape, dims))


@dataclass(frozen=True)
class _Layout:
    kind: str  # "rows": split on axis 0; "feeds": one feed per item on axis 0; "constant": same every feed
    chunk: int | None = None  # rows per feed fixed by the model


def _layout(spec: InputSpec, array: np.ndarray) -> _Layout:
    if spec.dims is None:
        return _Layout("rows") if array.ndim else _Layout("constant")
    dims = spec.dims
    if array.ndim == len(dims) + 1 and fits(array.shape[1:], dims):
        return _Layout("feeds")
    if array.ndim == len(dims) and dims and fits(array.shape[1:], dims[1:]):
        lead = dims[0]
        if not isinstance(lead, int):
            return _Layout("rows")
        if array.shape[0] == lead:
            return _Layout("constant") if lead != 1 else _Layout("rows", chunk=1)
        if array.shape[0] % lead == 0:
            return _Layout("rows", chunk=lead)
        raise DataError(
            f"input {spec.name!r}: {array.shape[0]} samples cannot be fed {lead} at a time "
            f"(the model fixes the batch to {lead})"
        )
    if array.ndim == len(dims) == 0:
        return _Layout("constant")
    raise DataError(
        f"input {spec.name!r}: array of shape {list(array.shape)} does not fit the model input {spec.shape_text} "
        f"(stack samples on the leading axis)"
    )


class Dataset:
    """Inputs for a model (and optional labels), fed in batches the model accepts."""

    def __init__(
        self,
        name: str,
        arrays: Mapping[str, np.ndarray],
        specs: list[InputSpec],
        *,
        labels: np.ndarray | None = None,
        synthetic: bool = False,
        batch_size: int | None = None,
    ) -> None:
        self.name = name
        self.description: str | None = None  # what the data is, in words, for the report (e.g. synthetic shapes)
        self.synthetic = synthetic
        self.labels = labels
        self.specs = specs
        self._arrays = dict(arrays)
        self._check_names(specs)
        self._layouts = {spec.name: _layout(spec, self._checked_dtype(spec)) for spec in specs}
        self._feed_count, self._rows_per_feed = self._plan(batch_size)
        if labels is not None and len(labels) != self.num_samples:
            raise DataError(f"{name}: {len(labels)} labels for {self.num_samples} samples")

    def _check_names(self, specs: list[InputSpec]) -> None:
        wanted = {spec.name for spec in specs}
        missing = sorted(wanted - self._arrays.keys())
        extra = sorted(self._arrays.keys() - wanted)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"unknown key(s) {', '.join(map(repr, extra))}")
            raise DataError(f"{self.name}: {'; '.join(parts)} (model inputs: {', '.join(sorted(wanted))})")

    def _checked_dtype(self, spec: InputSpec) -> np.ndarray:
        array = self._arrays[spec.name]
        if array.dtype != spec.dtype:
            raise DataError(f"input {spec.name!r}: dtype {array.dtype}, the model expects {spec.dtype}")
        return array

    def _plan(self, batch_size: int | None) -> tuple[int, int]:
        kinds = {layout.kind for layout in self._layouts.values()} - {"constant"}
        if kinds == {"rows", "feeds"}:
            raise DataError(f"{self.name}: mixes stacked rows and whole feeds; stack every input the same way")
        counts = {name: len(self._arrays[name]) for name, layout in self._layouts.items() if layout.kind != "constant"}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{name}: {count}" for name, count in counts.items())
            raise DataError(f"{self.name}: inputs hold different numbers of samples ({detail})")
        total = next(iter(counts.values()), 1)
        if total == 0:
            raise DataError(f"{self.name}: holds no samples ({', '.join(counts)}: 0 rows); nothing to run")
        if kinds == {"feeds"} or not kinds:
            return total, 1
        chunks = {layout.chunk for layout in self._layouts.values() if layout.chunk}
        if len(chunks) > 1:
            raise DataError(f"{self.name}: the model fixes different batch sizes on its inputs")
        rows = chunks.pop() if chunks else max(1, batch_size or self._rows_that_fit())
        return math.ceil(total / rows), rows

    def _rows_that_fit(self) -> int:
        """Rows per feed within FEED_INPUT_BYTES of inputs, between 1 and DEFAULT_BATCH_SIZE."""
        row_bytes = sum(self._arrays[n][0].nbytes for n, layout in self._layouts.items() if layout.kind == "rows")
        return max(1, min(DEFAULT_BATCH_SIZE, FEED_INPUT_BYTES // max(row_bytes, 1)))

    @property
    def num_samples(self) -> int:
        """Samples in the dataset: rows on the batch axis, or whole feeds."""
        counts = [len(self._arrays[n]) for n, layout in self._layouts.items() if layout.kind != "constant"]
        return counts[0] if counts else 1

    def is_batched(self, name: str) -> bool:
        """Whether input ``name`` carries samples on its leading axis (not the same array in every feed)."""
        return self._layouts[name].kind == "rows"

    @property
    def num_feeds(self) -> int:
        return self._feed_count

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        """One input dict per onnxruntime run."""
        for index in range(self._feed_count):
            feed = {}
            for name, layout in self._layouts.items():
                array = self._arrays[name]
                if layout.kind == "constant":
                    feed[name] = array
                elif layout.kind == "feeds":
                    feed[name] = np.asarray(array[index])  # a 0-d array, never a numpy scalar
                else:
                    feed[name] = array[index * self._rows_per_feed : (index + 1) * self._rows_per_feed]
            yield feed

    def first_feed(self) -> dict[str, np.ndarray]:
        return next(self.feeds())

    def split(self, held: int, rng: np.random.Generator) -> tuple[Dataset, Dataset] | None:
        """(the other samples, ``held`` samples drawn at random), fed as this dataset is; None when that leaves
        either side empty or cuts across the batch the model fixes."""
        chunk = self._rows_per_feed if any(layout.chunk for layout in self._layouts.values()) else 1
        total = self.num_samples
        if held < 1 or held >= total or held % chunk:  # (a dataset of constants alone holds one sample)
            return None
        order = rng.permutation(total)
        return self._rows(np.sort(order[held:]), self.name), self._rows(np.sort(order[:held]), f"{self.name}, held out")

    def _rows(self, index: np.ndarray, name: str) -> Dataset:
        arrays = {n: a if self._layouts[n].kind == "constant" else a[index] for n, a in self._arrays.items()}
        labels = None if self.labels is None else self.labels[index]
        batch = self._rows_per_feed if any(layout.kind == "rows" for layout in self._layouts.values()) else None
        part = Dataset(name, arrays, self.specs, labels=labels, synthetic=self.synthetic, batch_size=batch)
        part.description = self.description
        return part


def _np_load(path: Path, kind: str):  # noqa: ANN202 - an array or an archive, as numpy gives
    """``np.load`` with pickles refused and every failure turned into a one-line DataError."""
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise DataError(f"{path}: not a regular file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise _value_error(path, exc) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({exc})") from exc
    is_archive = isinstance(loaded, np.lib.npyio.NpzFile)
    if is_archive != (kind == ".npz"):
        if is_archive:
            loaded.close()
        raise DataError(f"{path}: not an {kind} file")
    return loaded


def _value_error(path: Path, exc: ValueError) -> DataError:
    """numpy's ValueError on reading an array: pickled objects refused, or a file shorter than its header says."""
    if "allow_pickle" in str(exc):
        return DataError(f"{path}: holds pickled objects, which are never loaded; save plain numeric arrays")
    return DataError(f"{path}: cannot read ({exc})")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with _np_load(path, ".npz") as npz:
        try:
            return {key: npz[key] for key in npz.files}
        except ValueError as exc:  # a member holding pickled objects, or shorter than its header says
            raise _value_error(path, exc) from exc
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from exc


def _load_npy(path: Path) -> np.ndarray:
    return _np_load(path, ".npy")


def _load_folder(path: Path) -> dict[str, np.ndarray]:
    npy = sorted(path.glob("*.npy"))
    npz = sorted(path.glob("*.npz"))
    if npy and npz:
        raise DataError(f"{path}: holds both .npy and .npz files; use one kind")
    if npy:
        return {file.stem: _load_npy(file) for file in npy}
    if not npz:
        raise DataError(f"{path}: no .npy or .npz files in the folder")
    parts = [_load_npz(file) for file in npz]
    keys = set(parts[0])
    for file, part in zip(npz, parts):
        if set(part) != keys:
            raise DataError(f"{file}: keys {sorted(part)} differ from {npz[0].name}'s {sorted(keys)}")
    try:
        return {key: np.concatenate([part[key] for part in parts]) for key in keys}
    except ValueError as exc:
        raise DataError(f"{path}: the .npz files cannot be stacked ({exc})") from exc


def load_arrays(source: str | Path) -> dict[str, np.ndarray]:
    """Read the arrays of an ``.npz`` file or a folder of ``.npy`` / ``.npz`` files."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such data file or folder")
    if path.is_dir():
        arrays = _load_folder(path)
    else:
        arrays = _load_npz(path)
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise DataError(f"{path}: array {key!r} holds Python objects; save plain numeric arrays")
    return arrays


def from_arrays(
    name: str, arrays: Mapping[str, np.ndarray], model: ir.Model, *, batch_size: int | None = None
) -> Dataset:
    """A dataset from in-memory arrays (the layout of an ``.npz``, ``labels`` optional)."""
    arrays = dict(arrays)
    labels = arrays.pop(LABELS_KEY, None)
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise DataError(
            f"{name}: 'labels' must be a 1-D array of integer class ids, got {labels.dtype} {list(labels.shape)}"
        )
    return Dataset(name, arrays, input_specs(model), labels=labels, batch_size=batch_size)
