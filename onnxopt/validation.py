"""Does the candidate still compute what the reference computes? Asked of onnxruntime, for real.

Both models run in onnxruntime's CPU provider at ``ORT_ENABLE_ALL`` (the deployment setting: some broken
graphs only fail once onnxruntime's own fusions apply) on the same inputs. Per output the comparison is
streamed over the dataset's feeds, so memory stays flat however large the dataset: max abs / rel error,
cosine similarity, the worst per-channel cosine along the channel axis (a whole-output cosine can read
0.9999 while the small-valued class scores beside box coordinates are all zero), non-finite values, top-1
agreement for class scores, and accuracy when the data has labels. Latency is the median ratio of
interleaved runs with intra-op spinning disabled (otherwise the idle session steals a core); size counts
external data. Positions an attention-mask input marks as padding are not compared. Gates turn these figures
into pass / fail with a one-line reason.

The default verdict (``defaults``, :class:`onnxopt.gates.DefaultVerdict`): an output that a task metric claims
(:mod:`onnxopt.metrics`: CTC sequences, probability-map IoU, pooled embeddings) is judged by that metric at its
threshold; every other output by the verdict's generic gates: for a model meant to compute the same numbers
(``SAME_MODEL``) cosine and worst-channel cosine, for a retrained one (``RETRAINED``, a distilled student) top-1
agreement on class scores and a cosine floor. A gate or metric the user sets replaces the default of its kind; a
gate the user sets that the model or data cannot take (``min_top1`` without class scores, ``max_accuracy_drop``
without labels) fails rather than pass unchecked. Without data nothing is compared and the result says so
(``compared``).

Written here: onnxruntime runs the models, numpy does the arithmetic; no library does the comparison.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxopt import model_io
from onnxopt.errors import DataError, ModelError, UsageError
from onnxopt.gates import SAME_MODEL, DefaultVerdict, Gates
from onnxopt.metrics import (
    AUTO,
    NO_METRIC,
    Metric,
    MetricRegistry,
    MetricRequest,
    MetricSpec,
    OutputInfo,
    attention_mask,
)

if TYPE_CHECKING:
    import onnxruntime as ort

    from onnxopt.context import RunContext
    from onnxopt.data import Dataset


@dataclass
class Check:
    """One gated figure: what was measured, the threshold, and whether it passed."""

    name: str
    passed: bool
    message: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class MetricOutcome:
    """A task metric's figure on one output, and the threshold it is gated at."""

    output: str
    metric: str
    summary: str
    value: float
    threshold: float
    default: bool  # chosen by the default verdict (detected), not asked for


@dataclass
class OutputComparison:
    """How one output of the candidate compares with the reference's."""

    name: str
    shape: list[int] | None = None
    max_abs: float = 0.0
    max_rel: float = 0.0
    cosine: float = 1.0
    worst_channel_cosine: float | None = None
    worst_channel: int | None = None
    nonfinite_reference: int = 0
    nonfinite_candidate: int = 0
    within_tolerance: bool = True
    top1_agreement: float | None = None
    masked_positions: int = 0  # padding positions (attention mask) left out of every figure


@dataclass
class ValidationResult:
    """Everything one validation measured, and the gates' verdict."""

    reference: str
    candidate: str
    data: str
    synthetic_data: bool
    samples: int
    data_description: str | None = None  # e.g. the shapes and values of synthetic inputs
    compared: bool = False  # outputs were run and compared on data (False: only loading and the signature)
    outputs: list[OutputComparison] = field(default_factory=list)
    metrics: list[MetricOutcome] = field(default_factory=list)
    accuracy_reference: float | None = None
    accuracy_candidate: float | None = None
    latency_ratio: float | None = None
    latency_reference_ms: float | None = None
    latency_candidate_ms: float | None = None
    latency_spread: tuple[float, float] | None = None  # quartiles of the paired runs' ratios
    latency_rounds: int | None = None  # paired runs made (fewer than asked once the ratio is known well enough)
    size_reference: int | None = None
    size_candidate: int | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def size_ratio(self) -> float | None:
        if self.size_reference and self.size_candidate is not None:
            return self.size_candidate / self.size_reference
        return None

    @property
    def worst_cosine(self) -> float | None:
        return min((o.cosine for o in self.outputs), default=None)

    def json_derived(self) -> dict[str, Any]:
        return {"passed": self.passed, "size_ratio": self.size_ratio}

    def failure_reason(self) -> str | None:
        """The first failed check's message, for a one-line error."""
        failed = [check.message for check in self.checks if not check.passed]
        if not failed:
            return None
        return failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")


def session_options(threads: int = 0) -> ort.SessionOptions:
    """CPU session options for validation: ORT_ENABLE_ALL, no spinning, optional thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 4  # failures arrive as exceptions, reported once; no ERROR lines on stderr
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def open_session(path: str | Path, *, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``path``; a model onnxruntime refuses is a one-line ModelError."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{path}: onnxruntime cannot load it: {_first_line(exc)}") from exc


#: onnxruntime's messages can run to pages (a whole graph dump); a one-line error keeps this much of it.
MESSAGE_CHARS = 600
#: The C++ source location and function signature onnxruntime puts in the middle of a sentence.
_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*")


def _first_line(exc: BaseException) -> str:
    """The whole message on one line (onnxruntime spreads one sentence over several), cut past MESSAGE_CHARS."""
    text = _SOURCE_LOCATION.sub("", " ".join(str(exc).split()))
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 3].rstrip() + "..."
    return text or type(exc).__name__


def _run(
    session: ort.InferenceSession, feed: dict[str, np.ndarray], path: str | Path, options: ort.RunOptions | None = None
) -> list[np.ndarray]:
    try:
        return session.run(None, feed, options)
    except Exception as exc:
        raise DataError(f"{path}: onnxruntime failed on the data: {_first_line(exc)}") from exc


class _OutputAccumulator:
    """Streams one output's comparison over feeds."""

    def __init__(self, name: str, channel_axis: int) -> None:
        self.result = OutputComparison(name)
        self.channel_axis = channel_axis
        self.dot = self.ref_sq = self.cand_sq = 0.0
        self.channel_stats: np.ndarray | None = None  # [3, C]: dot, ref², cand²
        self.channel_len = 0
        self.top1_agree = self.top1_total = 0
        self.tolerance: tuple[float, float] | None = None
        self.unequal = False  # a non-numeric output (strings) differed somewhere: its cosine is 0

    def add(self, ref: np.ndarray | list, cand: np.ndarray | list, feed: Mapping[str, np.ndarray]) -> None:
        r = self.result
        (ref, ref_keys), (cand, cand_keys) = _as_array(r.name, ref), _as_array(r.name, cand)
        if ref_keys != cand_keys:
            raise _Mismatch(f"output {r.name!r}: candidate's map keys {cand_keys}, reference's {ref_keys}")
        if ref.shape != cand.shape or ref.dtype != cand.dtype:
            raise _Mismatch(
                f"output {r.name!r}: candidate gives {cand.dtype} {list(cand.shape)}, "
                f"reference {ref.dtype} {list(ref.shape)}"
            )
        if r.shape is None:
            r.shape = list(ref.shape)
        if ref.dtype.kind not in "fiub":  # strings and the like: exact equality only
            if not np.array_equal(ref, cand):
                r.max_abs = float("inf")
                self.unequal = True
            return
        ref64 = ref.astype(np.float64)
        cand64 = cand.astype(np.float64)
        kept = np.ones(ref.shape, dtype=bool)
        mask = attention_mask(feed, *ref.shape[:2]) if ref.ndim >= 2 else None
        if mask is not None:
            kept = np.broadcast_to(mask.reshape(mask.shape + (1,) * (ref.ndim - 2)), ref.shape)
            r.masked_positions += int((~mask).sum())
        finite_ref, finite_cand = np.isfinite(ref64) | ~kept, np.isfinite(cand64) | ~kept
        r.nonfinite_reference += int((~finite_ref).sum())
        r.nonfinite_candidate += int((~finite_cand).sum())
        both = finite_ref & finite_cand & kept
        diff = np.where(both, np.abs(ref64 - cand64), 0.0)
        if diff.size:
            r.max_abs = max(r.max_abs, float(diff.max()))
            rel = diff / np.maximum(np.abs(np.where(both, ref64, 0.0)), 1e-12)
            r.max_rel = max(r.max_rel, float(np.where(diff > 0, rel, 0.0).max()))
            if self.tolerance is not None:
                atol, rtol = self.tolerance
                if np.any(diff > atol + rtol * np.abs(np.where(both, ref64, 0.0))):
                    r.within_tolerance = False
        ref0, cand0 = np.where(both, ref64, 0.0), np.where(both, cand64, 0.0)
        self.dot += float(np.vdot(ref0, cand0))
        self.ref_sq += float(np.vdot(ref0, ref0))
        self.cand_sq += float(np.vdot(cand0, cand0))
        self._add_channels(ref0, cand0)
        if ref.ndim == 2 and ref.shape[1] > 1 and ref.dtype.kind == "f":
            self.top1_agree += int((ref.argmax(axis=1) == cand.argmax(axis=1)).sum())
            self.top1_total += ref.shape[0]

    def _add_channels(self, ref: np.ndarray, cand: np.ndarray) -> None:
        axis = self.channel_axis if self.channel_axis >= 0 else ref.ndim + self.channel_axis
        if ref.ndim < 2 or not 0 <= axis < ref.ndim:
            return
        r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
        c = np.moveaxis(cand, axis, 0).reshape(ref.shape[axis], -1)
        stats = np.stack([(r * c).sum(axis=1), (r * r).sum(axis=1), (c * c).sum(axis=1)])
        if self.channel_stats is not None and self.channel_stats.shape != stats.shape:
            # the channel axis changes length between feeds (tokens padded to each batch's longest): channels
            # missing from a feed add nothing to its cosine
            width = max(self.channel_stats.shape[1], stats.shape[1])
            self.channel_stats, stats = (
                np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (self.channel_stats, stats)
            )
        self.channel_stats = stats if self.channel_stats is None else self.channel_stats + stats
        self.channel_len += r.shape[1]

    def finish(self) -> OutputComparison:
        r = self.result
        r.cosine = 0.0 if self.unequal else _cosine(self.dot, self.ref_sq, self.cand_sq)
        if self.channel_stats is not None and self.channel_len >= 2:
            cosines = [_cosine(*self.channel_stats[:, i]) for i in range(self.channel_stats.shape[1])]
            r.worst_channel = int(np.argmin(cosines))
            r.worst_channel_cosine = float(cosines[r.worst_channel])
        if self.top1_total:
            r.top1_agreement = self.top1_agree / self.top1_total
        return r


class _Mismatch(Exception):
    """The candidate's outputs differ in name, shape or dtype: not comparable at all."""


def _as_array(name: str, value: np.ndarray | list) -> tuple[np.ndarray, list | None]:
    """A sequence output as an array and its map keys: maps (a ZipMap's class -> probability) as rows of values
    in sorted key order, tensors stacked."""
    if isinstance(value, np.ndarray):
        return value, None
    if not isinstance(value, list):
        raise _Mismatch(f"output {name!r}: a {type(value).__name__}, which cannot be compared")
    if value and all(isinstance(item, dict) for item in value):
        keys = sorted(value[0])
        if any(sorted(item) != keys for item in value):
            raise _Mismatch(f"output {name!r}: the maps of one output have different keys")
        return np.array([[item[k] for k in keys] for item in value], dtype=np.float32), keys
    try:
        return (np.stack([np.asarray(item) for item in value]) if value else np.zeros((0,))), None
    except ValueError as exc:
        raise _Mismatch(f"output {name!r}: a sequence of unequal tensors ({exc})") from None


def _cosine(dot: float, a: float, b: float) -> float:
    if a == 0.0 and b == 0.0:
        return 1.0
    if a == 0.0 or b == 0.0:
        return 0.0
    return float(np.clip(dot / np.sqrt(a * b), -1.0, 1.0))


def _accuracy(outputs: list[np.ndarray], labels: np.ndarray) -> float | None:
    if not outputs:
        return None
    scores = np.concatenate(outputs)
    if scores.ndim != 2 or len(scores) != len(labels):
        return None
    return float((scores.argmax(axis=1) == labels).mean())


def _class_score_index(session: ort.InferenceSession) -> int | None:
    """The first output that looks like class scores ([batch, classes]); accuracy is measured on it."""
    for index, out in enumerate(session.get_outputs()):
        if len(out.shape) == 2 and out.type == "tensor(float)":
            return index
    return None


#: Latency rounds before an adaptive measurement may stop, and how close to the median ratio the ends of its
#: confidence interval must be to stop then (0.05: the ratio is known to within +-5 %).
MIN_LATENCY_ROUNDS = 6
LATENCY_TIGHT = 0.05


def median_interval_half_width(values: list[float]) -> float:
    """Half the width of the ~95 % confidence interval of the median of ``values``: 1.57 * IQR / sqrt(n).

    The notch of McGill, Tukey and Larsen's box plots (1978): it narrows as rounds accumulate, where the
    spread of the rounds themselves (the middle half) does not, so a noisy machine stops too once it has
    enough rounds, and a quiet one after few.
    """
    q1, _, q3 = statistics.quantiles(values, n=4)
    return 1.57 * (q3 - q1) / math.sqrt(len(values))


def _narrow(ratios: list[float], tight: float | None) -> bool:
    return tight is not None and median_interval_half_width(ratios) <= tight * statistics.median(ratios)


def measure_latency(
    reference: ort.InferenceSession,
    candidate: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    *,
    runs: int = 20,
    warmup: int = 3,
    tight: float | None = None,
    budget: float | None = None,
) -> tuple[float, float, float, tuple[float, float] | None, int | None]:
    """Median ms of each session, the median per-round ratio, its quartiles and the rounds run, runs interleaved so
    noise hits both.

    ``runs`` rounds at most; with ``tight``, fewer once MIN_LATENCY_ROUNDS rounds give a confidence interval of the
    median ratio within ``tight`` times it (:func:`median_interval_half_width`), and with ``budget``, once that many
    seconds are spent.
    """
    for _ in range(warmup):
        reference.run(None, feed)
        candidate.run(None, feed)
    ref_times, cand_times, ratios = [], [], []
    deadline = time.perf_counter() + budget if budget is not None else math.inf
    for round_index in range(runs):
        if len(ratios) >= MIN_LATENCY_ROUNDS and (time.perf_counter() > deadline or _narrow(ratios, tight)):
            break
        order = (reference, candidate) if round_index % 2 == 0 else (candidate, reference)
        elapsed = {}
        for session in order:
            start = time.perf_counter()
            session.run(None, feed)
            elapsed[id(session)] = time.perf_counter() - start
        ref_times.append(elapsed[id(reference)])
        cand_times.append(elapsed[id(candidate)])
        ratios.append(elapsed[id(candidate)] / max(elapsed[id(reference)], 1e-9))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else None
    spread = (quartiles[0], quartiles[2]) if quartiles else None
    return (statistics.median(ref_times) * 1e3, statistics.median(cand_times) * 1e3, statistics.median(ratios), spread,
            len(ratios))  # fmt: skip


#: Above this many bytes (model file plus external data) the reference and the candidate are not held in
#: onnxruntime at the same time, which would hold both models' weights at once.
ONE_SESSION_AT_A_TIME_BYTES = 1 << 30


def is_large(path: str | Path) -> bool:
    """Whether the model file (with its external data) is too large to hold in two sessions at once."""
    return model_io.file_size(path) > ONE_SESSION_AT_A_TIME_BYTES


#: One model's latency (large models, timed alone) takes at most ``runs`` runs or this many seconds, at least 3 runs.
LATENCY_SECONDS = 10.0


def _median_ms(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        session.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_SECONDS
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class Reference:
    """The reference's side of a comparison: its signature, its outputs for each feed, latency against a candidate."""

    signature: Signature
    score_index: int | None

    def outputs(self, index: int, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def latency(
        self, candidate: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int
    ) -> tuple[float, float, float, tuple[float, float] | None, int | None] | None:
        raise NotImplementedError


#: Reference outputs a run keeps in memory to reuse for every pass's comparison and the final one.
REFERENCE_CACHE_BYTES = 256 << 20


def _plain_array(value: object) -> bool:
    """Whether numpy stores ``value`` in an .npy file without pickling (no object dtype: strings, sequences)."""
    return isinstance(value, np.ndarray) and not value.dtype.hasobject


def _feed_key(feed: Mapping[str, np.ndarray]) -> bytes:
    """A digest of a feed's names, dtypes, shapes and values: equal feeds give equal keys, whatever their arrays."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(feed):
        array = np.ascontiguousarray(feed[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data)
    return digest.digest()


class LiveReference(Reference):
    """A reference session open beside the candidate's: latency interleaved, and outputs run once per feed.

    A run compares every pass's result and the written file on the same feeds, so the reference's outputs are
    kept (keyed by the feeds' contents) and reused: in memory up to :data:`REFERENCE_CACHE_BYTES`, past that
    written to ``spill_to`` as .npy files read back memory-mapped (a detector's maps over a large validation set
    are gigabytes; reading them is cheaper than running the reference again). Outputs numpy cannot store as
    plain arrays (sequences, strings), or any past the budget without ``spill_to``, are computed again.

    Once the outputs on a run's data are all kept (:meth:`record`), the session is closed while passes work
    (onnxruntime holds a copy of the weights, beside everything a quantizer loads) and opened again, with the
    same ``threads``, only when asked for what it does not keep: another feed, or latency.
    """

    def __init__(self, path: str | Path, threads: int = 0, spill_to: Path | None = None) -> None:
        self.path, self.threads = path, threads
        session = open_session(path, threads=threads)
        self._session: ort.InferenceSession | None = session
        self.signature = _signature(session)
        self.score_index = _class_score_index(session)
        self._cache: dict[bytes, list[np.ndarray]] = {}
        self._cached_bytes = 0
        self._spilled: dict[bytes, list[Path]] = {}
        self._spill_to = spill_to
        self.runs = 0  # reference runs onnxruntime really made, for the cost report and tests

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            self._session = open_session(self.path, threads=self.threads)
        return self._session

    def outputs(self, index: int, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._outputs(feed, None)

    def record(self, data: Dataset) -> None:
        """Run every feed of ``data`` once and keep the outputs; close the session if all of them are kept."""
        kept = True
        for feed in data.feeds():
            self._outputs(feed, None)
            kept = kept and self._kept(feed)
        if kept:
            self._session = None

    def _kept(self, feed: dict[str, np.ndarray]) -> bool:
        key = _feed_key(feed)
        return key in self._cache or key in self._spilled

    def probe(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs of a trial feed (raises DataError if onnxruntime refuses it), onnxruntime's memory arena
        shrunk back afterwards: a trial at a size the model rejects can still grow it by hundreds of MiB, which
        the session would otherwise keep for the whole run."""
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return self._outputs(feed, options)

    def _outputs(self, feed: dict[str, np.ndarray], options: ort.RunOptions | None) -> list[np.ndarray]:
        key = _feed_key(feed)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if key in self._spilled:
            return [np.load(file, mmap_mode="r") for file in self._spilled[key]]
        outputs = _run(self.session, feed, self.path, options)
        self.runs += 1
        size = sum(o.nbytes for o in outputs if isinstance(o, np.ndarray))
        if self._cached_bytes + size <= REFERENCE_CACHE_BYTES:
            self._cache[key] = outputs
            self._cached_bytes += size
        elif self._spill_to is not None and all(_plain_array(o) for o in outputs):
            self._spill_to.mkdir(parents=True, exist_ok=True)
            files = [self._spill_to / f"{key.hex()}-{i}.npy" for i in range(len(outputs))]
            for file, output in zip(files, outputs):
                np.save(file, output)
            self._spilled[key] = files
        return outputs

    def latency(
        self, candidate: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int
    ) -> tuple[float, float, float, tuple[float, float] | None, int | None] | None:
        return measure_latency(self.session, candidate, feed, runs=runs, tight=LATENCY_TIGHT, budget=LATENCY_SECONDS)


class RecordedReference(Reference):
    """The reference run over every feed first and closed before the candidate is opened.

    onnxruntime copies a model's weights into its session, so two sessions side by side hold two models:
    for a 2.4 GB model and its weight-only result, 4.9 GB against 2.9 GB one at a time. The outputs are
    kept in memory (a dataset's outputs are far smaller than the weights of a model this size) and latency
    is the median of each model's own runs (within :data:`LATENCY_SECONDS`), not interleaved. A run validating
    several candidates against one reference on one dataset records it once and passes it to every :func:`compare`.
    """

    def __init__(
        self, path: str | Path, data: Dataset | None, threads: int, latency_runs: int, context: RunContext | None
    ) -> None:
        session = open_session(path, threads=threads)
        self.signature = _signature(session)
        self.score_index = _class_score_index(session)
        self._outputs: list[list[np.ndarray]] = []
        self._latency_ms: float | None = None
        if data is not None:
            feeds = data.feeds()
            if context is not None:
                feeds = context.progress(feeds, total=data.num_feeds, desc="reference")
            self._outputs = [_run(session, feed, path) for feed in feeds]
            if latency_runs > 0:
                self._latency_ms = _median_ms(session, data.first_feed(), latency_runs)

    def outputs(self, index: int, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._outputs[index]

    def latency(
        self, candidate: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int
    ) -> tuple[float, float, float, tuple[float, float] | None, int | None] | None:
        if self._latency_ms is None:  # recorded without latency runs
            return None
        candidate_ms = _median_ms(candidate, feed, runs)
        return self._latency_ms, candidate_ms, candidate_ms / max(self._latency_ms, 1e-9), None, None


def open_reference(path: str | Path, data: Dataset | None, *, threads: int = 0, latency_runs: int = 0,
                   context: RunContext | None = None) -> Reference:  # fmt: skip
    """The reference side of every comparison against ``path`` on ``data``: an open session, or for a model too
    large to hold beside a candidate (:func:`is_large`) its outputs recorded once and the session closed."""
    if is_large(path):
        return RecordedReference(path, data, threads, latency_runs, context)
    return LiveReference(path, threads)


def compare(
    reference: str | Path,
    candidate: str | Path,
    data: Dataset | None,
    gates: Gates | None = None,
    *,
    metrics: Sequence[MetricRequest] = (),
    defaults: DefaultVerdict | None = SAME_MODEL,
    latency_runs: int = 20,
    threads: int = 0,
    channel_axis: int = 1,
    context: RunContext | None = None,
    opened: Reference | None = None,
) -> ValidationResult:
    """Run both model files in onnxruntime on ``data`` and judge the candidate against ``gates``.

    A reference onnxruntime cannot load or run is the user's problem (ModelError / DataError); a candidate
    it cannot load, run, or that gives differently-shaped outputs, fails validation with a reason.
    Without data (``None``) only loading, the signature and size are checked, and ``compared`` stays False.
    ``metrics`` are task metrics asked for (``--metric``); ``defaults`` applies the default verdict (module
    docstring) to whatever the user's gates and metrics leave unjudged. ``opened`` (from
    :func:`open_reference`, on the same ``data``) lets a caller validating many candidates open the reference once.
    """
    gates = gates or Gates()
    reference_side = opened or open_reference(
        reference, data, threads=threads, latency_runs=latency_runs, context=context
    )
    run = run_candidate(
        reference, candidate, reference_side, data, gates, metrics=metrics, defaults=defaults, threads=threads,
        channel_axis=channel_axis, context=context,
    )  # fmt: skip
    if run.session is None:
        return run.measured
    return run.verdict(candidate, data, gates, defaults=defaults, latency_runs=latency_runs, context=context)


@dataclass
class CandidateRun:
    """A candidate file opened and run on the data: what was measured before any gate, and its open session.

    A run keeps the one of its best pass: the file it finally writes is a byte copy of that staged candidate, so
    its verdict reuses these outputs and this session (timed now) instead of a second session and a second pass
    over the data. ``session`` is None when the candidate failed before the gates (it did not load, its signature
    differs, or it failed on the data): ``measured`` then holds the failed check.
    """

    measured: ValidationResult
    reference: Reference
    session: ort.InferenceSession | None

    def verdict(
        self,
        candidate: str | Path,
        data: Dataset | None,
        gates: Gates,
        *,
        defaults: DefaultVerdict | None = SAME_MODEL,
        latency_runs: int = 0,
        context: RunContext | None = None,
    ) -> ValidationResult:
        """The measured figures judged for the file ``candidate`` (the run's file or a byte copy of it): latency
        measured now, sizes read from that file, gates checked and the plugins' onnxopt_validate hooks asked."""
        result = replace(
            self.measured, candidate=str(candidate), checks=list(self.measured.checks), notes=list(self.measured.notes)
        )
        if result.compared and latency_runs > 0 and data is not None:
            with _phase(context, "latency"):
                latency = self.reference.latency(self.session, data.first_feed(), latency_runs)
            if latency is not None:
                (result.latency_reference_ms, result.latency_candidate_ms, result.latency_ratio,
                 result.latency_spread, result.latency_rounds) = latency  # fmt: skip
        result.size_reference = model_io.file_size(result.reference)
        result.size_candidate = model_io.file_size(candidate)
        result.checks.extend(_gate_checks(result, gates, defaults))
        if context is not None:
            for checks in context.hook.onnxopt_validate(
                reference=result.reference, candidate=str(candidate), data=data, context=context
            ):
                result.checks.extend(checks or [])
        return result


def run_candidate(
    reference: str | Path,
    candidate: str | Path,
    reference_side: Reference,
    data: Dataset | None,
    gates: Gates,
    *,
    metrics: Sequence[MetricRequest] = (),
    defaults: DefaultVerdict | None = SAME_MODEL,
    threads: int = 0,
    channel_axis: int = 1,
    context: RunContext | None = None,
) -> CandidateRun:
    """Open ``candidate`` in onnxruntime, check its signature and compare its outputs on ``data`` with the
    reference's (no latency, sizes or gates yet: :meth:`CandidateRun.verdict` adds them)."""
    name, synthetic, samples = (data.name, data.synthetic, data.num_samples) if data else ("no data", False, 0)
    result = ValidationResult(str(reference), str(candidate), name, synthetic, samples)
    result.data_description = getattr(data, "description", None) if data is not None else None
    failed = CandidateRun(result, reference_side, None)
    if isinstance(reference_side, RecordedReference):
        result.notes.append("large model: the reference ran first, then the candidate (latency not interleaved)")
    try:
        with _phase(context, "onnxruntime session (candidate)"):
            cand_session = open_session(candidate, threads=threads)
    except ModelError as exc:
        result.checks.append(Check("loads", False, f"candidate: {exc}"))
        return failed
    result.checks.append(Check("loads", True, "candidate loads in onnxruntime (ORT_ENABLE_ALL)"))
    if not _same_signature(reference_side.signature, _signature(cand_session), result):
        return failed
    if data is None:
        result.notes.append("no data: outputs were not compared (not validated)")
    else:
        judge = _Judge(gates, list(metrics), defaults, _metric_registry(context, metrics))
        if not _compare_outputs(result, reference_side, cand_session, data, gates, judge, channel_axis, context):
            return failed
        result.compared = True
        if data.synthetic:
            result.notes.append(
                f"compared on {data.name} random inputs: fine for catching broken graphs, not for accuracy"
            )
    return CandidateRun(result, reference_side, cand_session)


def _phase(context: RunContext | None, name: str) -> contextlib.AbstractContextManager:
    return context.costs.phase(name) if context is not None else contextlib.nullcontext()


def _metric_registry(context: RunContext | None, requests: Sequence[MetricRequest]) -> MetricRegistry:
    """The plugins' metrics (none without a run context: only a user's own functions can be asked for)."""
    registry = context.metric_registry if context is not None else MetricRegistry([])
    registry.check(list(requests))
    return registry


@dataclass
class _Judge:
    """Which task metrics judge which output, decided on the first feed."""

    gates: Gates
    requests: list[MetricRequest]
    defaults: DefaultVerdict | None
    registry: MetricRegistry
    chosen: dict[int, list[tuple[MetricSpec, Metric, float, bool]]] = field(default_factory=dict)

    def choose(self, names: list[str], ref_out: list[np.ndarray], feed: Mapping[str, np.ndarray]) -> None:
        for request in self.requests:
            if request.output is not None and request.output not in names:
                raise UsageError(
                    f"--metric {request.text}: the model has no output {request.output!r} (outputs: {', '.join(names)})"
                )
        automatic = self.defaults is not None and not any(r.metric == NO_METRIC for r in self.requests)
        for index, (name, array) in enumerate(zip(names, ref_out)):
            if not isinstance(array, np.ndarray):
                continue
            info = OutputInfo(name, index, array, feed, len(names))
            picked = []
            for request in self.requests:
                if request.metric in (NO_METRIC, AUTO) or request.output not in (None, name):
                    continue
                spec = self.registry.get(request.metric)
                metric = spec.create(info)
                if metric is None:
                    if request.output is not None:
                        raise UsageError(
                            f"--metric {request.text}: {request.metric!r} does not apply to output "
                            f"{name!r} {list(array.shape)}"
                        )
                    continue
                picked.append((spec, metric, spec.threshold if request.threshold is None else request.threshold, False))
            if not picked and (automatic or any(r.metric == AUTO for r in self.requests)):
                spec = self.registry.detect(info)
                metric = spec.create(info) if spec is not None else None
                if spec is not None and metric is not None:
                    picked.append((spec, metric, spec.threshold, True))
            if picked:
                self.chosen[index] = picked

    def add(self, ref_out: list[np.ndarray], cand_out: list[np.ndarray], feed: Mapping[str, np.ndarray]) -> None:
        for index, picked in self.chosen.items():
            for _, metric, _, _ in picked:
                metric.add(ref_out[index], cand_out[index], feed)

    def outcomes(self, names: list[str]) -> list[MetricOutcome]:
        return [
            MetricOutcome(names[index], spec.name, spec.summary, float(metric.value()), threshold, default)
            for index, picked in self.chosen.items()
            for spec, metric, threshold, default in picked
        ]


def _compare_outputs(
    result: ValidationResult,
    reference: Reference,
    cand_session: ort.InferenceSession,
    data: Dataset,
    gates: Gates,
    judge: _Judge,
    channel_axis: int,
    context: RunContext | None,
) -> bool:
    """Stream every feed through both sessions into ``result``; False if the candidate failed outright."""
    names = reference.signature[1]
    accumulators = [_OutputAccumulator(name, channel_axis) for name in names]
    if gates.atol is not None or gates.rtol is not None:
        for acc in accumulators:
            acc.tolerance = (gates.atol or 0.0, gates.rtol or 0.0)
    score_index = reference.score_index if data.labels is not None else None
    ref_scores: list[np.ndarray] = []
    cand_scores: list[np.ndarray] = []
    feeds = data.feeds()
    if context is not None:
        feeds = context.progress(feeds, total=data.num_feeds, desc="validate")
    try:
        for index, feed in enumerate(feeds):
            with _phase(context, "reference runs"):
                ref_out = reference.outputs(index, feed)
            try:
                with _phase(context, "candidate runs"):
                    cand_out = cand_session.run(None, feed)
            except Exception as exc:
                result.checks.append(Check("runs", False, f"candidate fails on the data: {_first_line(exc)}"))
                return False
            if index == 0:
                judge.choose(names, ref_out, feed)
            for acc, r, c in zip(accumulators, ref_out, cand_out):
                acc.add(r, c, feed)
            judge.add(ref_out, cand_out, feed)
            if score_index is not None:
                ref_scores.append(ref_out[score_index])
                cand_scores.append(cand_out[score_index])
    except _Mismatch as exc:
        result.checks.append(Check("outputs", False, str(exc)))
        return False
    result.outputs = [acc.finish() for acc in accumulators]
    result.metrics = judge.outcomes(names)
    if score_index is not None:
        result.accuracy_reference = _accuracy(ref_scores, data.labels)
        result.accuracy_candidate = _accuracy(cand_scores, data.labels)
        if result.accuracy_reference is None:
            result.notes.append("labels given but no [batch, classes] output matches them; accuracy not measured")
    return True


Signature = tuple[dict[str, str], list[str]]  # input name -> type, output names in order


def _signature(session: ort.InferenceSession) -> Signature:
    return {i.name: i.type for i in session.get_inputs()}, [o.name for o in session.get_outputs()]


def _same_signature(ref: Signature, cand: Signature, result: ValidationResult) -> bool:
    (ref_inputs, ref_outputs), (cand_inputs, cand_outputs) = ref, cand
    if ref_inputs != cand_inputs:
        result.checks.append(
            Check("signature", False, f"inputs differ: reference {ref_inputs}, candidate {cand_inputs}")
        )
        return False
    if ref_outputs != cand_outputs:
        result.checks.append(
            Check("signature", False, f"outputs differ: reference {ref_outputs}, candidate {cand_outputs}")
        )
        return False
    return True


def _gate_checks(result: ValidationResult, gates: Gates, defaults: DefaultVerdict | None) -> list[Check]:
    checks = []

    def at_least(name: str, what: str, value: float | None, threshold: float | None) -> None:
        if threshold is None or value is None:
            return
        ok = value >= threshold  # NaN fails: a figure that could not be computed proves nothing
        checks.append(Check(name, ok, f"{what} {value:.6g} {'>=' if ok else '<'} {threshold:g}", value, threshold))

    def at_most(name: str, what: str, value: float | None, threshold: float | None) -> None:
        if threshold is None or value is None:
            return
        ok = value <= threshold
        checks.append(Check(name, ok, f"{what} {value:.6g} {'<=' if ok else '>'} {threshold:g}", value, threshold))

    judged = {outcome.output for outcome in result.metrics}
    for out in result.outputs:
        label = f"output {out.name!r}:"
        if out.nonfinite_candidate > out.nonfinite_reference:
            checks.append(
                Check(
                    "finite",
                    False,
                    f"{label} {out.nonfinite_candidate} NaN/Inf values (reference has {out.nonfinite_reference})",
                )
            )
        if gates.atol is not None or gates.rtol is not None:
            tol = f"atol {gates.atol or 0:g}, rtol {gates.rtol or 0:g}"
            checks.append(
                Check(
                    "tolerance",
                    out.within_tolerance,
                    f"{label} max abs error {out.max_abs:.3g}, max rel {out.max_rel:.3g} "
                    f"{'within' if out.within_tolerance else 'beyond'} {tol}",
                    out.max_abs,
                    gates.atol,
                )
            )
        # the generic defaults judge only what no task metric judges; a gate the user set applies everywhere
        class_scores = out.top1_agreement is not None
        fallback = defaults.fallback(out.name, out.name in judged, class_scores) if defaults is not None else Gates()
        min_cosine = gates.min_cosine if gates.min_cosine is not None else fallback.min_cosine
        min_channel = gates.min_channel_cosine if gates.min_channel_cosine is not None else fallback.min_channel_cosine
        at_least("cosine", f"{label} cosine", out.cosine, min_cosine)
        at_least(
            "channel_cosine",
            f"{label} worst channel ({out.worst_channel}) cosine",
            out.worst_channel_cosine,
            min_channel,
        )
        min_top1 = gates.min_top1 if gates.min_top1 is not None else fallback.min_top1
        at_least("top1", f"{label} top-1 agreement", out.top1_agreement, min_top1)
    if gates.min_top1 is not None and result.compared and all(out.top1_agreement is None for out in result.outputs):
        # a gate asked for and not checked would read as met: the verdict cannot say OK on it
        shapes = ", ".join(f"{out.name!r} {out.shape}" for out in result.outputs)
        checks.append(Check("top1", False, f"min_top1 not checked: no output holds class scores [batch, classes] "
                                           f"({shapes}); gate this model by --metric or another gate"))  # fmt: skip
    for outcome in result.metrics:
        how = "default for this output" if outcome.default else "asked for"
        at_least(
            f"metric:{outcome.metric}",
            f"output {outcome.output!r}: {outcome.metric} ({how})",
            outcome.value,
            outcome.threshold,
        )
    if result.accuracy_reference is not None and result.accuracy_candidate is not None:
        drop = result.accuracy_reference - result.accuracy_candidate
        at_most(
            "accuracy",
            f"accuracy drop ({result.accuracy_reference:.4f} -> {result.accuracy_candidate:.4f})",
            drop,
            gates.max_accuracy_drop,
        )
    elif gates.max_accuracy_drop is not None and result.compared:
        checks.append(Check("accuracy", False, "max_accuracy_drop not checked: the data has no usable labels"))
    at_most("latency", "latency ratio", result.latency_ratio, gates.max_latency_ratio)
    at_most("size", "size ratio", result.size_ratio, gates.max_size_ratio)
    return checks
