"""Recurrent weights through quantize and cluster: ddddocr's captcha OCR (a CNN into a bidirectional LSTM and a
CTC head; most of its 54 MB are the LSTM's and the head's weights), size, latency and decoded-text agreement.

    python bench/recurrent.py [--model ~/.cache/onnx-real/models/ddddocr-1.6.1__common.onnx] [--images 64] [--rounds 20]

Data: captcha-like images rendered here with Pillow (4-6 random letters and digits in DejaVu fonts, jittered,
rotated, over noise and a few lines), 64 x 168, grey, scaled to [-1, 1] as ddddocr does; 32 images calibrate,
``--images`` others judge. Every variant runs through ``onnxopt.optimize`` in this process with permissive gates
(nothing rolled back); the variants and fp32 are then compared here the same way. The ``recurrent=float`` row
reproduces what quantize did before it reached LSTM weights.

Columns: *size* file / fp32; *latency* onnxruntime ORT_ENABLE_ALL, 1 thread, median of per-round ratios over
interleaved shuffled rounds (bench/common.py's measure); *logit cosine* over every output value
of every image (mean / min per image); *text equal*: images whose greedy CTC decoding (argmax per step, repeats
collapsed, blank 0 dropped) equals fp32's; *left alone*: the pass's report of weights it did not rewrite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (latency, CTC decoding, cosine, tables)

from onnxopt.model_io import file_size  # noqa: E402
from onnxopt.validation import open_session  # noqa: E402

DEFAULT_MODEL = Path.home() / ".cache" / "onnx-real" / "models" / "ddddocr-1.6.1__common.onnx"
HEIGHT, WIDTH = 64, 168
CALIBRATION_IMAGES = 32
PERMISSIVE = {"min_cosine": 0.0, "min_channel_cosine": 0.0}
CHARACTERS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSans.ttf")
VARIANTS = (
    ("quantize static, recurrent=float (before)", ["quantize:recurrent=float"]),
    ("quantize static (LSTM: int8 weights, float compute)", ["quantize"]),
    ("quantize static, recurrent=dynamic_lstm", ["quantize:recurrent=dynamic_lstm"]),
    ("quantize dynamic", ["quantize:mode=dynamic"]),
    ("quantize weight_only (4-bit blocks)", ["quantize:mode=weight_only"]),
    ("cluster k=16", ["cluster"]),
    ("cluster k=16 per channel", ["cluster:per_channel=true"]),
    ("cluster k=16 per channel, min_cosine=0.995", ["cluster:per_channel=true,min_cosine=0.995"]),
    ("quantize static + cluster (int8 in 4 bits)", ["quantize", "cluster"]),
    ("cluster binarize (1 bit)", ["cluster:binarize=true"]),
)


def captcha(rng: np.random.Generator) -> np.ndarray:
    """One captcha-like image, ``[64, 168]`` float32 in [-1, 1]."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    image = Image.fromarray(rng.integers(170, 256, size=(HEIGHT, WIDTH), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    text = "".join(rng.choice(list(CHARACTERS), size=int(rng.integers(4, 7))))
    x = float(rng.uniform(4, 14))
    for char in text:
        try:
            font = ImageFont.truetype(FONTS[int(rng.integers(len(FONTS)))], int(rng.integers(30, 42)))
        except OSError:
            font = ImageFont.load_default(size=36)
        glyph = Image.new("L", (48, 56), 0)
        ImageDraw.Draw(glyph).text((6, 2), char, fill=255, font=font)
        glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        ink = Image.new("L", glyph.size, int(rng.integers(0, 90)))
        image.paste(ink, (int(x), int(rng.integers(0, 10))), glyph)
        x += float(rng.uniform(20, 27))
    for _ in range(int(rng.integers(1, 4))):
        points = [tuple(int(v) for v in (rng.integers(0, WIDTH), rng.integers(0, HEIGHT))) for _ in range(2)]
        draw.line(points, fill=int(rng.integers(40, 140)), width=int(rng.integers(1, 3)))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.8))))
    return (np.asarray(image, np.float32) / 255.0 - 0.5) / 0.5


def images(seed: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([captcha(rng) for _ in range(count)])[:, None, None]  # [count, 1 (feed), 1, 64, 168]


def outputs(path: Path, feeds: np.ndarray) -> list[np.ndarray]:
    sess = open_session(path, threads=1)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: feed})[0] for feed in feeds]


def fidelity(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[str, str]:
    cosines = np.array([common.cosine(r, g) for r, g in zip(ref, got)])
    equal = sum(text(r) == text(g) for r, g in zip(ref, got))
    return f"{cosines.mean():.4f} / {cosines.min():.4f}", f"{equal}/{len(ref)}"


def text(logits: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC decoding of one image's [steps, 1, classes] output."""
    return common.ctc_decode(logits.transpose(1, 0, 2))[0]


def left_alone(stats: list[dict], shown: int = 3) -> str:
    """The passes' reports of weights left alone, the first ``shown`` (the largest) and a count of the rest."""
    entries = [
        f"{k}: {v}"
        for s in stats
        for key in ("weights_left_float", "weights_left_alone")
        for k, v in s.get(key, {}).items()
    ]
    return (
        "; ".join(entries[:shown]) + (f"; ... ({len(entries) - shown} more entries)" if len(entries) > shown else "")
        or "none"
    )


def main() -> None:
    import onnxopt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = work / "calib.npz"
        np.savez(calib, input1=images(1, CALIBRATION_IMAGES)[:, 0])
        judge = images(2, args.images)
        ref = outputs(args.model, judge)
        decoded = [len(text(r)) for r in ref]
        rows, sessions = [], {"fp32": open_session(args.model, threads=1)}
        for index, (title, passes) in enumerate(VARIANTS):
            out = work / f"v{index}.onnx"
            report = onnxopt.optimize(args.model, out, passes=passes, data=calib, gates=PERMISSIVE, latency_runs=0)
            if report.exit_code != 0 or not out.exists():
                rows.append([title, "failed: " + common.one_line(report.message, 120), "", "", "", ""])
                continue
            cosine, equal = fidelity(ref, outputs(out, judge))
            sessions[title] = open_session(out, threads=1)
            size = file_size(out) / file_size(args.model)
            rows.append([title, f"{size:.3f}", title, cosine, equal, left_alone([s.stats for s in report.steps])])
        latency = common.measure_latency(sessions, {"input1": judge[0]}, args.rounds, seed=0)
        for row in rows:
            row[2] = f"{latency[row[2]]:.2f}" if row[2] in latency else ""
    print(f"{args.model.name}: fp32 {file_size(args.model) / 2**20:.1f} MiB, {latency['fp32 ms']:.1f} ms per image "
          f"at 1 thread; fp32 decodes {np.mean(decoded):.1f} characters per image (min {min(decoded)}); "
          f"{args.images} judged images, {CALIBRATION_IMAGES} calibration images, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    header = ["variant", "size", "latency", "logit cosine (mean / min)", "text equal to fp32", "left alone (report)"]
    print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
