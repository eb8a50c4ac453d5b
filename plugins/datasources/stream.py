"""A dataset whose feeds are made when they are asked for, not held in memory.

The host's :class:`onnxopt.data.Dataset` holds its arrays; a folder of 50 000 images must not. This class
answers the same questions the host and the passes ask a dataset (``feeds()``, ``first_feed()``,
``num_feeds``, ``num_samples``, ``labels``, ``synthetic``, ``name``, ``specs``, ``is_batched()``) from a
function that makes the feeds afresh on every ``feeds()`` call, so a calibration pass and each validation can
all read the data once more without keeping it. ``name`` is the source's path; ``description`` holds the
effective settings, which the report prints after it. Also here, for every reader: which samples a ``samples=N``
cap keeps (:func:`pick`) and how many rows go in a feed (:func:`batching`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from onnxopt import DEFAULT_BATCH_SIZE, DataError, InputSpec

Feed = dict[str, np.ndarray]


class StreamedDataset:
    """Feeds made on demand by ``make_feeds``; the counts are known up front (progress bars, calibration caps)."""

    synthetic = False
    labels = None

    def __init__(
        self,
        source: str,
        specs: list[InputSpec],
        make_feeds: Callable[[], Iterable[Feed]],
        *,
        num_feeds: int,
        num_samples: int,
        batched: Collection[str],
        description: str,
    ) -> None:
        self.description = description
        self.name = source
        self.specs = specs
        self.num_feeds = num_feeds
        self.num_samples = num_samples
        self._make_feeds = make_feeds
        self._batched = frozenset(batched)
        self._first: Feed | None = None

    def feeds(self) -> Iterator[Feed]:
        """One input dict per onnxruntime run, read from the source as it is consumed."""
        yield from self._make_feeds()

    def first_feed(self) -> Feed:
        if self._first is None:
            self._first = next(iter(self.feeds()))
        return self._first

    def is_batched(self, name: str) -> bool:
        """Whether input ``name`` carries samples on its leading axis (not the same array in every feed)."""
        return name in self._batched


def fits(shape: tuple[int, ...], dims: tuple[int | str | None, ...] | None) -> bool:
    """Whether an array of ``shape`` can feed an input of ``dims`` (symbolic dims take any size)."""
    if dims is None:
        return True
    return len(shape) == len(dims) and all(not isinstance(d, int) or d == s for s, d in zip(shape, dims))


def check_feed(feed: object, specs: list[InputSpec], where: str) -> Feed:
    """``feed`` as a dict of arrays for ``specs``, or a one-line DataError saying what is wrong with it."""
    if not isinstance(feed, dict):
        raise DataError(f"{where}: is a {type(feed).__name__}, expected a dict of input name -> array")
    wanted = {spec.name for spec in specs}
    missing, extra = sorted(wanted - feed.keys()), sorted(map(str, feed.keys() - wanted))
    if missing or extra:
        parts = ([f"missing input(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown name(s) {', '.join(extra)}"] if extra else []
        )
        raise DataError(f"{where}: {'; '.join(parts)} (model inputs: {', '.join(sorted(wanted))})")
    arrays = {}
    for spec in specs:
        array = np.asarray(feed[spec.name])
        if array.dtype != spec.dtype:
            raise DataError(f"{where}: input {spec.name!r} has dtype {array.dtype}, the model expects {spec.dtype}")
        if not fits(array.shape, spec.dims):
            raise DataError(
                f"{where}: input {spec.name!r} has shape {list(array.shape)}, the model expects {spec.shape_text}"
            )
        arrays[spec.name] = array
    return arrays


def pick(total: int, samples: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``samples`` of ``total`` items, a seeded choice kept in order (all of them without a cap)."""
    if samples is None or samples >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=samples, replace=False))


def batching(batch: int | str | None, count: int, options: Mapping[str, Any], source: str) -> tuple[int, int]:
    """Rows per feed and how many of ``count`` samples are fed: a batch the model fixes drops the remainder."""
    if not isinstance(batch, int):
        return max(1, options.get("batch_size") or DEFAULT_BATCH_SIZE), count
    usable = count - count % batch
    if usable == 0:
        raise DataError(f"{source}: {count} sample(s), but the model takes batches of exactly {batch}")
    return batch, usable
