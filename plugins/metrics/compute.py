"""The built-in task metrics' computations (numpy): what :mod:`onnxopt_plugins.metrics` registers by name.

Imported when an output is judged, not when the plugin registers (the CLI imports every plugin on every command).
``APPLIES`` says, per metric, which outputs it can measure and with which streaming figure; ``CLAIMS`` which
outputs it claims for the default verdict (a metric missing from it claims none: it is asked for by name).

Written here (numpy): thresholded-mask IoU, masked mean pooling, nearest neighbours, score-threshold + per-class
NMS detections matched by IoU; greedy CTC decoding is the host's (:func:`onnxopt.ctc_decode`), which distillation's
``ctc`` loss reads too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from onnxopt import OutputInfo, attention_mask, ctc_decode

from .settings import (
    MASK_THRESHOLD,
    MATCH_IOU,
    MAX_DETECTIONS,
    MAX_NEIGHBOUR_ROWS,
    NEIGHBOUR_RANKS,
    NMS_IOU,
    SCORE_THRESHOLD,
)

_EMBEDDING_NAMES = ("embed", "pool", "sentence", "feature", "vector", "hidden")


def _is_probabilities(array: np.ndarray, axis: int) -> bool:
    if array.dtype.kind != "f" or array.size == 0 or not np.all(np.isfinite(array)):
        return False
    return bool(array.min() >= 0 and np.allclose(array.sum(axis=axis), 1.0, atol=1e-3))


def _in_unit_range(array: np.ndarray) -> bool:
    finite = array.dtype.kind == "f" and array.size > 0 and bool(np.all(np.isfinite(array)))
    return finite and array.min() >= 0 and array.max() <= 1


# --------------------------------------------------------------------------- CTC / arg-max sequences


class SequenceAgreement:
    """Share of samples whose greedily decoded sequence (CTC: repeats collapsed, blanks dropped) is identical."""

    def __init__(self) -> None:
        self.agree = self.total = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        self.agree += sum(r == c for r, c in zip(ctc_decode(reference), ctc_decode(candidate)))
        self.total += reference.shape[0]

    def value(self) -> float:
        return self.agree / self.total if self.total else float("nan")


def _sequence_scores(info: OutputInfo) -> bool:
    ref = info.reference
    return ref.ndim == 3 and ref.shape[1] > 1 and ref.shape[2] > 2 and ref.dtype.kind == "f"


def _detect_sequence(info: OutputInfo) -> bool:
    """Per-step class probabilities [batch, steps, classes] (a softmax over the last axis): CTC heads."""
    return _sequence_scores(info) and _is_probabilities(info.reference, axis=-1)


# --------------------------------------------------------------------------- mask IoU


class MaskIoU:
    """Intersection over union of the maps thresholded at MASK_THRESHOLD, summed over every feed."""

    def __init__(self, threshold: float = MASK_THRESHOLD) -> None:
        self.threshold = threshold
        self.intersection = self.union = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        r, c = reference > self.threshold, candidate > self.threshold
        self.intersection += int((r & c).sum())
        self.union += int((r | c).sum())

    def value(self) -> float:
        return self.intersection / self.union if self.union else 1.0


def _maps(info: OutputInfo) -> bool:
    ref = info.reference
    return ref.ndim >= 3 and ref.dtype.kind == "f" and int(np.prod(ref.shape[-2:])) >= 16


def _detect_mask(info: OutputInfo) -> bool:
    """A probability map: [batch, few channels, H, W] with every value in [0, 1] (a sigmoid head)."""
    ref = info.reference
    few_channels = ref.ndim == 4 and ref.shape[1] <= 4
    return few_channels and _maps(info) and _in_unit_range(ref) and not _is_probabilities(ref, axis=1)


# --------------------------------------------------------------------------- embeddings


def pooled(output: np.ndarray, feed: Mapping[str, np.ndarray]) -> np.ndarray:
    """[batch, dim] embeddings: as they are, or [batch, tokens, dim] mean-pooled over the attention mask."""
    if output.ndim == 2:
        return output.astype(np.float64)
    batch, length = output.shape[:2]
    mask = attention_mask(feed, batch, length)
    weights = np.ones((batch, length)) if mask is None else mask.astype(np.float64)
    flat = output.reshape(batch, length, -1).astype(np.float64)
    return (flat * weights[:, :, None]).sum(axis=1) / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-300), np.where((a == b).all(axis=1), 1.0, 0.0))


class PooledCosine:
    """Mean over samples of the cosine between pooled reference and candidate embeddings."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        cosines = _row_cosines(pooled(reference, feed), pooled(candidate, feed))
        self.total += float(cosines.sum())
        self.count += len(cosines)

    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class NeighbourAgreement:
    """Share of samples whose nearest other sample under the reference (cosine of pooled embeddings) is among
    the candidate's :data:`.settings.NEIGHBOUR_RANKS` nearest: recall at that rank, as retrieval is judged.

    Not the literal "same nearest neighbour": among a user's own sentences many have two neighbours all but
    equally close, and their order is a coin toss that even the original's own dynamic int8 flips often enough to
    fail 0.9 by that count, while this one still tells a weak student apart (figures: bench/README.md,
    distill_real.py)."""

    def __init__(self) -> None:
        self.reference: list[np.ndarray] = []
        self.candidate: list[np.ndarray] = []
        self.rows = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        if self.rows >= MAX_NEIGHBOUR_ROWS:
            return
        self.reference.append(pooled(reference, feed))
        self.candidate.append(pooled(candidate, feed))
        self.rows += reference.shape[0]

    def value(self) -> float:
        if self.rows <= NEIGHBOUR_RANKS + 1:  # every other sample is among the nearest: no figure
            return float("nan")
        nearest = _similarities(np.concatenate(self.reference)).argmax(axis=1)
        candidate = _similarities(np.concatenate(self.candidate))
        closer = (candidate > candidate[np.arange(len(candidate)), nearest][:, None]).sum(axis=1)
        return float((closer < NEIGHBOUR_RANKS).mean())


def _similarities(rows: np.ndarray) -> np.ndarray:
    """Cosine of every pair of rows, -inf on the diagonal (a sample is not its own neighbour)."""
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def _embeddings(info: OutputInfo) -> bool:
    ref = info.reference
    return ref.dtype.kind == "f" and ref.ndim in (2, 3) and ref.shape[-1] > 1


def _detect_embedding(info: OutputInfo) -> bool:
    """Token states [batch, tokens, dim] beside an attention mask, or [batch, dim] vectors named or normalised as
    embeddings (unit rows, not probabilities)."""
    ref = info.reference
    if not _embeddings(info) or _is_probabilities(ref, axis=-1):
        return False
    if ref.ndim == 3:
        return attention_mask(info.feed, ref.shape[0], ref.shape[1]) is not None
    named = any(word in info.name.lower() for word in _EMBEDDING_NAMES)
    unit_rows = bool(np.allclose(np.linalg.norm(ref.astype(np.float64), axis=1), 1.0, atol=1e-3))
    return named or unit_rows


# --------------------------------------------------------------------------- detections


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    """[n, 4] centre x, centre y, width, height -> corners."""
    half = np.abs(boxes[:, 2:]) / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def detections(head: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(class, corners) kept by score and per-class greedy NMS from one [4 + K, anchors] head."""
    scores = head[4:]
    classes, best = scores.argmax(axis=0), scores.max(axis=0)
    order = np.argsort(-best)[:MAX_DETECTIONS]
    order = order[best[order] >= SCORE_THRESHOLD]
    boxes = _xyxy(head[:4, order].T)
    kept: list[tuple[int, np.ndarray]] = []
    for index, box in zip(order, boxes):
        same = [b for c, b in kept if c == classes[index]]
        if not same or _iou(box, np.array(same)).max() < NMS_IOU:
            kept.append((int(classes[index]), box))
    return kept


class DetectionAgreement:
    """F1 of the candidate's detections against the reference's: same class, IoU >= MATCH_IOU, matched greedily."""

    def __init__(self) -> None:
        self.matched = self.total = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        for ref_head, cand_head in zip(reference, candidate):
            wanted, found = detections(ref_head), detections(cand_head)
            self.total += len(wanted) + len(found)
            free = list(found)
            for cls, box in wanted:
                hits = [i for i, (c, b) in enumerate(free) if c == cls and _iou(box, b[None])[0] >= MATCH_IOU]
                if hits:
                    free.pop(hits[0])
                    self.matched += 2

    def value(self) -> float:
        return self.matched / self.total if self.total else 1.0


def _detection_head(info: OutputInfo) -> bool:
    ref = info.reference
    return ref.ndim == 3 and ref.dtype.kind == "f" and 5 <= ref.shape[1] < ref.shape[2]


#: metric name -> (whether it can measure an output, its streaming figure)
APPLIES: dict[str, tuple[Callable[[OutputInfo], bool], type]] = {
    "ctc": (_sequence_scores, SequenceAgreement),
    "mask_iou": (_maps, MaskIoU),
    "embedding": (_embeddings, PooledCosine),
    "detection": (_detection_head, DetectionAgreement),
    "neighbours": (_embeddings, NeighbourAgreement),
}
#: metric name -> whether it claims an output for the default verdict (detection and neighbours: asked for only)
CLAIMS: dict[str, Callable[[OutputInfo], bool]] = {
    "ctc": _detect_sequence,
    "mask_iou": _detect_mask,
    "embedding": _detect_embedding,
}
