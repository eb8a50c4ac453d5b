"""The built-in task metrics against hand-computed values, and their detection on typical outputs."""

from __future__ import annotations

import numpy as np
from paths import FIXTURES

from onnxopt.metrics import OutputInfo, parse_request
from onnxopt_plugins.metrics import onnxopt_register_metrics
from onnxopt_plugins.metrics.compute import (
    DetectionAgreement,
    MaskIoU,
    NeighbourAgreement,
    PooledCosine,
    SequenceAgreement,
    ctc_decode,
)


def _specs() -> dict:
    specs = {}
    onnxopt_register_metrics(lambda spec: specs.__setitem__(spec.name, spec))
    return specs


def _onehot(steps: list[int], classes: int = 4) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[steps]


def test_ctc_decode_collapses_repeats_and_drops_blanks():
    scores = np.stack([_onehot([1, 1, 0, 1, 2, 2, 0]), _onehot([0, 0, 3, 0, 0, 0, 0])])
    assert ctc_decode(scores) == [(1, 1, 2), (3,)]


def test_sequence_agreement_counts_whole_sequences():
    reference = np.stack([_onehot([1, 0, 2]), _onehot([3, 3, 0])])
    candidate = np.stack([_onehot([1, 1, 2]), _onehot([3, 0, 3])])  # same string; a doubled letter
    metric = SequenceAgreement()
    metric.add(reference, candidate, {})
    assert metric.value() == 0.5


def test_mask_iou_by_hand():
    reference = np.array([[[[0.9, 0.9, 0.1, 0.1]]]], np.float32)
    candidate = np.array([[[[0.9, 0.2, 0.8, 0.1]]]], np.float32)
    metric = MaskIoU(threshold=0.3)
    metric.add(reference, candidate, {})
    assert metric.value() == 1 / 3  # intersection {0}, union {0, 1, 2}
    empty = MaskIoU()
    empty.add(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), {})
    assert empty.value() == 1.0


def test_pooled_cosine_ignores_padding_and_neighbours_compare_rankings():
    reference = np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])  # third token is padding
    candidate = np.array([[[1.0, 0.0], [0.0, 1.0], [-9.0, 5.0]]])
    feed = {"attention_mask": np.array([[1, 1, 0]], np.int64)}
    metric = PooledCosine()
    metric.add(reference, candidate, feed)
    assert abs(metric.value() - 1.0) < 1e-12
    unmasked = PooledCosine()
    unmasked.add(reference, candidate, {})
    assert unmasked.value() < 0.9


def _fan(cosines: list[float]) -> np.ndarray:
    """Row 0 and one row per cosine, at that cosine to row 0 and nearer to row 0 than to each other."""
    rows = np.zeros((len(cosines) + 1, len(cosines) + 1))
    rows[0, 0] = 1.0
    for i, c in enumerate(cosines, 1):
        rows[i, 0], rows[i, i] = c, np.sqrt(1.0 - c * c)
    return rows


def test_neighbours_pass_a_sample_whose_nearest_stays_within_the_candidates_three_nearest():
    reference = _fan([0.9, 0.8, 0.7, 0.6, 0.5])  # row 0's nearest is row 1; every other row's is row 0

    def agreement(candidate: np.ndarray, reference: np.ndarray = reference) -> float:
        metric = NeighbourAgreement()
        metric.add(reference[:3], candidate[:3], {})  # streamed in batches
        metric.add(reference[3:], candidate[3:], {})
        return metric.value()

    assert agreement(reference * 2) == 1.0
    assert agreement(_fan([0.7, 0.9, 0.8, 0.6, 0.5])) == 1.0  # row 1 third nearest to row 0: still found
    assert agreement(_fan([0.6, 0.9, 0.8, 0.7, 0.5])) == 5 / 6 < 0.9  # fourth: row 0 is lost
    assert np.isnan(agreement(_fan([0.9, 0.8, 0.7]), _fan([0.9, 0.8, 0.7])))  # 4 rows: every row is within 3


def test_detection_claims_the_outputs_it_fits_and_no_other():
    specs = _specs()
    rng = np.random.default_rng(0)

    def claimed(name: str, array: np.ndarray, feed: dict | None = None) -> list[str]:
        info = OutputInfo(name, 0, array, feed or {})
        return [spec.name for spec in specs.values() if spec.detect(info)]

    logits = rng.standard_normal((4, 10, 6625)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert claimed("softmax_11.tmp_0", probs) == ["ctc"]
    assert claimed("logits", logits) == []  # raw scores: not certainly a CTC head
    assert claimed("sigmoid_0.tmp_0", rng.random((1, 1, 32, 32)).astype(np.float32)) == ["mask_iou"]
    assert claimed("features", rng.standard_normal((1, 8, 32, 32)).astype(np.float32)) == []
    hidden = rng.standard_normal((2, 5, 16)).astype(np.float32)
    assert claimed("last_hidden_state", hidden, {"attention_mask": np.ones((2, 5), np.int64)}) == ["embedding"]
    assert claimed("last_hidden_state", hidden) == []  # no mask beside it: nothing says these are tokens
    unit = rng.standard_normal((4, 384))
    assert claimed("out", (unit / np.linalg.norm(unit, axis=1, keepdims=True)).astype(np.float32)) == ["embedding"]
    assert claimed("logits", rng.standard_normal((4, 10)).astype(np.float32)) == []


def test_registered_metrics_build_their_figure_only_where_it_applies():
    specs = _specs()
    assert list(specs) == ["ctc", "mask_iou", "embedding", "detection", "neighbours"]  # the order they claim in
    rng = np.random.default_rng(0)
    sequence = OutputInfo("probs", 0, rng.random((2, 5, 4)).astype(np.float32), {})
    vectors = OutputInfo("scores", 0, rng.random((2, 4)).astype(np.float32), {})
    head = OutputInfo("boxes", 0, rng.random((1, 6, 20)).astype(np.float32), {})
    assert isinstance(specs["ctc"].create(sequence), SequenceAgreement) and specs["ctc"].create(vectors) is None
    assert isinstance(specs["detection"].create(head), DetectionAgreement)
    assert specs["detection"].create(vectors) is None
    assert isinstance(specs["mask_iou"].create(head), MaskIoU)
    assert isinstance(specs["embedding"].create(vectors), PooledCosine)
    assert isinstance(specs["neighbours"].create(vectors), NeighbourAgreement)


def test_metric_requests_parse():
    assert parse_request("ctc").metric == "ctc"
    request = parse_request("probs=ctc>=0.95")
    assert (request.output, request.metric, request.threshold) == ("probs", "ctc", 0.95)
    user = parse_request("my_metric.py:score>=0.5")
    assert (user.output, user.metric, user.threshold) == (None, "my_metric.py:score", 0.5)


def test_detection_agreement_loses_the_collapsed_classes(tmp_path):
    import sys

    import onnxruntime as ort

    sys.path.insert(0, str(FIXTURES))
    from build_verdict_fixtures import COLLAPSED, detector

    from onnxopt_plugins.metrics.compute import detections

    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    heads = {}
    for name, collapsed in (("ref", ()), ("cand", COLLAPSED)):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(detector(collapsed).SerializeToString())
        heads[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    found = detections(heads["ref"][0])
    assert found and {c for c, _ in found} & set(COLLAPSED)
    same, lost = DetectionAgreement(), DetectionAgreement()
    same.add(heads["ref"], heads["ref"], {})
    lost.add(heads["ref"], heads["cand"], {})
    assert same.value() == 1.0 and lost.value() < 0.9
