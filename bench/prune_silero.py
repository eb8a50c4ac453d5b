"""Structured pruning inside If branches: silero_vad (silero-vad==6.2.3), whose layers all sit in the two branches
of an If (8 and 16 kHz).

    python bench/prune_silero.py [--runs 400]

Fetches the model with ``bench/common.py``, runs ``fold`` + ``prune-structured`` at 30 % and 50 %
through ``onnxopt.optimize``, and prints a table: layers pruned, parameters and file size against the original,
latency ratio (``onnxopt.validation.measure_latency``: 1 intra-op thread, interleaved runs, median) on 32 ms of
16 kHz audio, and the speech probability's agreement with the original over 64 seeded chunks (60 at 16 kHz,
4 at 8 kHz, so both branches run; the chunks are noise, not speech, so read it as a relative measure). Nothing
is retrained: recovering the fidelity is distill's job.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from fold_real_models import make_inputs  # noqa: E402


def _feeds() -> list[dict[str, np.ndarray]]:
    feeds = [make_inputs("silero", seed) for seed in range(64)]
    for feed in feeds[:4]:  # the 8 kHz branch takes 256 samples
        feed.update(sr=np.array(8000, np.int64), input=feed["input"][:, :256])
    return feeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    args = parser.parse_args(argv)
    import onnxopt
    from onnxopt.summary import summarize
    from onnxopt.validation import measure_latency, open_session

    source = common.fetch(common.model("silero"))
    feeds = _feeds()
    original = open_session(source, threads=1)
    reference = np.concatenate([original.run(None, feed)[0].ravel() for feed in feeds])
    before = summarize(onnxopt.load(source, check=False), source)
    header = ["variant", "layers pruned", "parameters", "file size", "latency ratio (1 thread)",
              "speech prob: max abs diff", "cosine"]  # fmt: skip
    print(common.markdown_table(header, [], "lrrrrrr"))
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.3, 0.5):
            out = Path(tmp) / f"silero_{sparsity}.onnx"
            report = onnxopt.optimize(source, out, passes=["fold", f"prune-structured:sparsity={sparsity}"],
                                      gates={"min_cosine": 0.0}, latency_runs=0, quiet=True)  # fmt: skip
            if report.exit_code != 0:
                print(common.markdown_row([f"structured {sparsity:.0%}", f"failed: {report.message}"]))
                continue
            after = summarize(onnxopt.load(out, check=False), out)
            pruned = open_session(out, threads=1)
            got = np.concatenate([pruned.run(None, feed)[0].ravel() for feed in feeds])
            ratio = measure_latency(original, pruned, feeds[10], runs=args.runs)[2]
            print(common.markdown_row([
                f"structured {sparsity:.0%}", report.steps[-1].stats["layers_pruned"],
                f"{after.parameters / before.parameters:.3f}x", f"{after.file_bytes / before.file_bytes:.3f}x",
                f"{ratio:.3f}", f"{np.abs(reference - got).max():.3f}", f"{common.cosine(reference, got):.4f}",
            ]))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
