"""Built-in task metrics: an output judged by what it is for (hook ``onnxopt_register_metrics``).

Each metric streams over the validation feeds and yields one "higher is better" figure; ``detect`` claims
the outputs whose shape and values make their task plain, so the default verdict judges them by it instead of
by a cosine that does not fit (a CTC recogniser that reads the same strings, a text detector whose thresholded
mask is kept, sentence embeddings beside padding). ``detection`` is asked for only: no detector was at hand
to calibrate its detection. Default thresholds and the evidence for them: bench/verdict.py (bench/README.md).

Written here (numpy): greedy CTC decoding, thresholded-mask IoU, masked mean pooling, nearest neighbours,
score-threshold + per-class NMS detections matched by IoU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from onnxopt import MetricSpec, OutputInfo, attention_mask, hookimpl

#: Probability maps are binarised here (PaddleOCR's DB post-processing uses 0.3 on its text maps).
MASK_THRESHOLD = 0.3
#: CTC's blank class, 0 in PaddleOCR, ddddocr and torch's CTCLoss default.
CTC_BLANK = 0
#: Embeddings kept for nearest-neighbour agreement (each is a row of floats).
MAX_NEIGHBOUR_ROWS = 4096
_EMBEDDING_NAMES = ("embed", "pool", "sentence", "feature", "vector", "hidden")


def _is_probabilities(array: np.ndarray, axis: int) -> bool:
    if array.dtype.kind != "f" or array.size == 0 or not np.all(np.isfinite(array)):
        return False
    return bool(array.min() >= 0 and np.allclose(array.sum(axis=axis), 1.0, atol=1e-3))


def _in_unit_range(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and bool(np.all(np.isfinite(array))) and array.min() >= 0 and array.max() <= 1


# --------------------------------------------------------------------------- CTC / arg-max sequences


def ctc_decode(scores: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [batch, steps, classes]: arg-max per step, repeats collapsed, blanks removed."""
    best = scores.argmax(axis=-1)
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(row[k].tolist()) for row, k in zip(best, keep)]


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
    return ref.ndim == 4 and ref.shape[1] <= 4 and _maps(info) and _in_unit_range(ref) and not _is_probabilities(ref, axis=1)


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
    """Share of samples whose nearest other sample (cosine) is the same for both models' pooled embeddings."""

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
        if self.rows < 3:
            return float("nan")
        return float((_nearest(np.concatenate(self.reference)) == _nearest(np.concatenate(self.candidate))).mean())


def _nearest(rows: np.ndarray) -> np.ndarray:
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


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

#: A YOLO-style head's detections: class score at least this, greedy NMS at NMS_IOU, matched at MATCH_IOU.
SCORE_THRESHOLD, NMS_IOU, MATCH_IOU, MAX_DETECTIONS = 0.25, 0.45, 0.5, 300


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
    order = np.argsort(-best)[: MAX_DETECTIONS]
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


def _when(applies: Callable[[OutputInfo], bool], metric: type) -> Callable[[OutputInfo], object | None]:
    return lambda info: metric() if applies(info) else None


@hookimpl
def onnxopt_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    register(MetricSpec("ctc", "greedy CTC / arg-max sequences identical (repeats collapsed, blank 0 dropped)", 0.9,
                        _when(_sequence_scores, SequenceAgreement), _detect_sequence, "metrics"))  # fmt: skip
    register(MetricSpec("mask_iou", f"IoU of the maps thresholded at {MASK_THRESHOLD}", 0.85,
                        _when(_maps, MaskIoU), _detect_mask, "metrics"))  # fmt: skip
    register(MetricSpec("embedding", "mean cosine of pooled embeddings (attention-masked mean over tokens)", 0.98,
                        _when(_embeddings, PooledCosine), _detect_embedding, "metrics"))  # fmt: skip
    register(MetricSpec("detection", f"detections agreeing (F1; class scores >= {SCORE_THRESHOLD}, NMS, IoU >= {MATCH_IOU}) "
                        "of a [batch, 4 + classes, anchors] head", 0.9, _when(_detection_head, DetectionAgreement),
                        plugin="metrics"))  # fmt: skip
    register(MetricSpec("neighbours", "nearest-neighbour agreement of pooled embeddings across samples", 0.9,
                        _when(_embeddings, NeighbourAgreement), plugin="metrics"))  # fmt: skip
