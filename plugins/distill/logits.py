"""Step 1 of distillation: the teacher's outputs on the training data, computed once with onnxruntime.

Each output goes to its own ``<cache>/<teacher hash>-<data hash>-<output hash>.npy``, so a rerun with the same
teacher file and the same data reuses it instead of running the teacher again, and only the outputs a run
trains on are computed (MiniLM's hidden states are 50x its sentence embeddings). The teacher hash covers the
model file and its external-data files; the data hash covers every input array's name, dtype, shape and bytes.
Memory stays bounded by the batch, not the data set: each batch is written into the file (a memory map) as it
comes, and the file is read back memory-mapped (a recogniser's 6625-class outputs on 2000 text lines are
2 GB). Files are written under a temporary name and renamed: a partial file from an interrupted run is never read.
Written here: nothing in onnxruntime or numpy caches model outputs by content.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt import DataError, open_session

CACHE_ENV = "ONNXOPT_CACHE_DIR"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$ONNXOPT_CACHE_DIR/logits``, else ``~/.cache/onnxopt/logits``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "onnxopt") / "logits"


def _update_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def model_hash(path: Path) -> str:
    """SHA-256 of the model file and, in name order, the external-data files it references."""
    digest = hashlib.sha256()
    _update_file(digest, path)
    proto = onnx.load(str(path), load_external_data=False)
    locations = sorted(
        {entry.value for t in proto.graph.initializer for entry in t.external_data if entry.key == "location"}
    )
    for location in locations:
        digest.update(location.encode())
        _update_file(digest, path.parent / location)
    return digest.hexdigest()


def data_hash(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherOutputs:
    files: dict[str, Path]  # output name -> its .npy file
    outputs: dict[str, np.ndarray]  # output name -> [N, ...], memory-mapped from its file
    cached: bool  # every one read back from an earlier run


def _output_names(session: Any, names: Sequence[str] | None) -> list[str]:
    available = [o.name for o in session.get_outputs()]
    return available if names is None else [name for name in available if name in names]


def outputs_of(
    model: Path,
    inputs: Mapping[str, np.ndarray],
    batch_size: int = 256,
    progress: Callable[..., Iterator[Any]] = lambda it, **_: iter(it),
    names: Sequence[str] | None = None,
    into: Callable[[str, np.ndarray, int], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The outputs of the model at ``model`` on ``inputs`` (rows on axis 0), by name, run in batches: every one,
    or those in ``names``. Each is filled batch by batch into ``into(name, first batch, rows)`` (default: a new
    array), so nothing the size of the data is held twice."""
    session = open_session(model)
    wanted = _output_names(session, names)
    count = len(next(iter(inputs.values())))
    filled: dict[str, np.ndarray] = {}
    for start in progress(range(0, count, batch_size), total=-(-count // batch_size), desc="teacher outputs"):
        feed = {name: array[start : start + batch_size] for name, array in inputs.items()}
        try:
            results = session.run(wanted, feed)
        except Exception as exc:  # onnxruntime raises its own types for a bad feed
            raise DataError(f"{model.name} cannot run on the training data: {' '.join(str(exc).split())}") from exc
        for name, result in zip(wanted, results):
            if name not in filled:
                filled[name] = (into or _new_array)(name, result, count)
            target = filled[name]
            if target.shape[1:] != result.shape[1:]:
                raise DataError(f"{model.name}: output {name!r} is {result.shape[1:]} for rows {start}.., "
                                f"{target.shape[1:]} before: batches of one data set must agree")  # fmt: skip
            target[start : start + len(result)] = result
    return filled


def _new_array(name: str, first: np.ndarray, rows: int) -> np.ndarray:
    return np.empty((rows, *first.shape[1:]), first.dtype)


def _cache_file(cache_dir: Path, teacher_key: str, data_key: str, name: str) -> Path:
    return cache_dir / f"{teacher_key}-{data_key}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.npy"


def teacher_outputs(
    teacher: Path,
    inputs: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 256,
    progress: Callable[..., Iterator[Any]] = lambda it, **_: iter(it),
) -> TeacherOutputs:
    """The teacher's tensor outputs ``names`` on ``inputs`` (rows on axis 0): read back from the cache
    (memory-mapped), or computed into it."""
    cache_dir = cache_dir or default_cache_dir()
    teacher_key, data_key = model_hash(teacher)[:24], data_hash(inputs)[:24]
    files = {name: _cache_file(cache_dir, teacher_key, data_key, name) for name in names}
    missing = [name for name, file in files.items() if not file.exists()]
    if missing:
        cache_dir.mkdir(parents=True, exist_ok=True)
        staged: dict[str, Path] = {}

        def into(name: str, first: np.ndarray, rows: int) -> np.ndarray:
            handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".npy.part")
            os.close(handle)
            staged[name] = Path(temporary)
            return np.lib.format.open_memmap(temporary, mode="w+", dtype=first.dtype, shape=(rows, *first.shape[1:]))

        try:
            filled = outputs_of(teacher, inputs, batch_size, progress, names=missing, into=into)
            for name, array in filled.items():
                array.flush()
                os.replace(staged[name], files[name])
        finally:
            for temporary in staged.values():
                temporary.unlink(missing_ok=True)
    # copy-on-write: pages are read when a batch needs them; a trainer may write without touching the file
    outputs = {name: np.load(file, mmap_mode="c", allow_pickle=False) for name, file in files.items()}
    return TeacherOutputs(files, outputs, cached=not missing)
