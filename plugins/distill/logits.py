"""Step 1 of distillation: the teacher's outputs on the training data, computed once with onnxruntime.

The outputs go to ``<cache>/<teacher hash>-<data hash>.npz`` (one array per teacher output, keyed by its
name), so a rerun with the same teacher file and the same data reuses them instead of running the
teacher again. The teacher hash covers the model file and its external-data files; the data hash covers
every input array's name, dtype, shape and bytes. The file is written atomically (a partial file from
an interrupted run is never read back).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
    path: Path
    outputs: dict[str, np.ndarray]  # output name -> [N, ...]
    cached: bool  # read back from an earlier run


def outputs_of(
    model: Path,
    inputs: Mapping[str, np.ndarray],
    batch_size: int = 256,
    progress: Callable[..., Iterator[Any]] = lambda it, **_: iter(it),
) -> dict[str, np.ndarray]:
    """Every output of the model at ``model`` on ``inputs`` (rows on axis 0), by name, run in batches."""
    session = open_session(model)
    names = [o.name for o in session.get_outputs()]
    count = len(next(iter(inputs.values())))
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in progress(range(0, count, batch_size), total=-(-count // batch_size), desc="teacher outputs"):
        feed = {name: array[start : start + batch_size] for name, array in inputs.items()}
        try:
            results = session.run(None, feed)
        except Exception as exc:  # onnxruntime raises its own types for a bad feed
            raise DataError(f"{model.name} cannot run on the training data: {' '.join(str(exc).split())}") from exc
        for part, result in zip(parts, results):
            part.append(result)
    return {name: np.concatenate(part) for name, part in zip(names, parts)}


def teacher_outputs(
    teacher: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 256,
    progress: Callable[..., Iterator[Any]] = lambda it, **_: iter(it),
) -> TeacherOutputs:
    """The teacher's outputs on ``inputs`` (rows on axis 0): read from the cache, or computed and cached."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"{model_hash(teacher)[:24]}-{data_hash(inputs)[:24]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as npz:
            return TeacherOutputs(path, {key: npz[key] for key in npz.files}, cached=True)
    outputs = outputs_of(teacher, inputs, batch_size, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".npz.part")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **outputs)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return TeacherOutputs(path, outputs, cached=False)
