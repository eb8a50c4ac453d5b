"""How much output cosine clustering each weight costs, measured in onnxruntime on the run's data.

One probe model is saved with the candidate weights turned into graph inputs, so a single onnxruntime session
answers every question by feeding either the original or the clustered values: no session per tensor. The
loss of one tensor is ``1 - cosine`` of every output against the unclustered model over the data; these
losses add up closely when several tensors are clustered together (all-MiniLM-L6-v2: 0.0302 summed over 38
tensors, 0.0302 measured with all of them), which is what :func:`choose` relies on and then checks.
Written here: nothing else measures per-tensor sensitivity of an ONNX model without gradients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxopt import Dataset, open_session, save

#: The probe runs on at most this many feeds (batches) of the run's data.
MAX_FEEDS = 16


@contextmanager
def _weights_as_inputs(model: ir.Model, values: list[ir.Value]) -> Iterator[None]:
    """Temporarily make ``values`` (main-graph initializers) graph inputs instead of initializers."""
    graph = model.graph
    for value in values:
        del graph.initializers[value.name]
        graph.inputs.append(value)
    try:
        yield
    finally:
        for value in values:
            graph.inputs.remove(value)
            graph.register_initializer(value)


class Probe:
    """Runs the model on the data with any mix of original and clustered weights."""

    def __init__(self, model: ir.Model, originals: dict[ir.Value, np.ndarray], dataset: Dataset, workdir: Path) -> None:
        path = workdir / "cluster_probe.onnx"
        with _weights_as_inputs(model, list(originals)):
            save(model, path)
        self.session = open_session(path)
        path.unlink()  # onnxruntime holds the model now; a large model's copy need not wait for the run's end
        self.originals = {value.name: array for value, array in originals.items()}
        self.feeds = list(itertools.islice(dataset.feeds(), MAX_FEEDS))
        self.reference = self._outputs({})

    def _outputs(self, replaced: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
        weights = {**self.originals, **replaced}
        return [self.session.run(None, {**feed, **weights}) for feed in self.feeds]

    def losses(self, replaced: dict[str, np.ndarray]) -> np.ndarray:
        """``1 - cosine`` per output over all feeds, with ``replaced`` weights instead of the originals."""
        got = self._outputs(replaced)
        losses = []
        for index in range(len(self.reference[0])):
            ref = np.concatenate([r[index].astype(np.float64).ravel() for r in self.reference])
            out = np.concatenate([g[index].astype(np.float64).ravel() for g in got])
            norms = np.linalg.norm(ref) * np.linalg.norm(out)
            losses.append(0.0 if norms == 0 else 1.0 - float(ref @ out) / norms)
        return np.array(losses)


def choose(probe: Probe, clustered: dict[str, np.ndarray], fallback: Callable[[str], np.ndarray],
           elements: dict[str, int], min_cosine: float) -> tuple[dict[str, float], float]:  # fmt: skip
    """Which tensors to spare so that every output keeps ``min_cosine``: ({name: its measured loss}, the cosine).

    A spared tensor gets the values ``fallback(name)`` gives (finer clustering, or the originals). The tensors that lose
    the most cosine per weight are spared first, until the summed losses of the rest fit; then the whole
    choice is measured at once, and more are spared while the measured cosine falls short.
    """
    losses = {name: probe.losses({name: array}) for name, array in clustered.items()}
    order = sorted(clustered, key=lambda name: losses[name].max() / elements[name], reverse=True)
    spared: dict[str, float] = {}
    total = sum(losses.values())
    for name in order:
        if np.max(total) <= 1.0 - min_cosine:
            break
        spared[name] = float(losses[name].max())
        total = total - losses[name]
    while True:
        chosen = {name: fallback(name) if name in spared else array for name, array in clustered.items()}
        measured = 1.0 - float(probe.losses(chosen).max())
        rest = [name for name in order if name not in spared]
        if measured >= min_cosine or not rest:
            return spared, measured
        spared[rest[0]] = float(losses[rest[0]].max())
