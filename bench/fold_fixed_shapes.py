"""fold against onnxsim on the project's OCR models with their input shapes fixed: nodes left and outputs.

    python bench/fold_fixed_shapes.py [--models-dir DIR] [--no-readme]

With the shapes fixed (``fold:fix_input_shapes=true`` with ``shapes``; onnxsim's ``overwrite_input_shapes``)
every shape computation can fold (issue 19 saw onnxsim end with fewer nodes there on other OCR models). The
models are the PP-OCRv4 detector and recognizer, the ppocr v2 direction classifier (rapidocr-onnxruntime
1.4.4) and ddddocr 1.6.1's captcha recognizer, read from ``--models-dir`` (default
``~/.cache/onnx-real/models``, see ``../shared/realmodels``). Each optimizer runs in its own subprocess
(onnxsim from the same Python; its cells say "failed" with the reason when it is not installed). Counted: nodes other
than Constant (If / Loop / Scan bodies included), and the max abs difference of every output against the original in
onnxruntime on one seeded input at the fixed shape.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = (  # (title, file, input shape)
    ("PP-OCRv4 det", "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_det_infer.onnx", (1, 3, 640, 640)),
    ("PP-OCRv4 rec", "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),
    ("ppocr v2 cls", "rapidocr-onnxruntime-1.4.4__ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),
    ("ddddocr common", "ddddocr-1.6.1__common.onnx", (1, 1, 64, 256)),
)
TOOLS = ("fold", "onnxsim")
WORKER_TIMEOUT = 1800


def optimize(tool: str, src: str, dst: str, shape: list[int]) -> None:
    """Run one optimizer with the model's single input fixed to ``shape`` (in a worker subprocess)."""
    import onnx

    name = onnx.load(src, load_external_data=False).graph.input[0].name
    if tool == "fold":
        import onnxopt

        model = onnxopt.apply_passes(
            onnxopt.load(src, check=False), ["fold:fix_input_shapes=true"], shapes={name: tuple(shape)}
        )
        onnxopt.save(model, dst)
    else:
        import onnxsim

        onnx.save(onnxsim.simplify(onnx.load(src), overwrite_input_shapes={name: shape})[0], dst)
    common.print_result({})


def nodes(path: Path) -> int:
    return sum(count for op, count in common.op_counts(path).items() if op != "Constant")


def max_diff(original: Path, candidate: Path, shape: tuple[int, ...]) -> float:
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (original, candidate)]
    outputs = [s.run(None, {s.get_inputs()[0].name: x}) for s in runs]
    return max(float(np.abs(a - b).max()) for a, b in zip(*outputs))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        optimize(argv[1], argv[2], argv[3], json.loads(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path.home() / ".cache" / "onnx-real" / "models")
    parser.add_argument("--out", type=Path, default=Path("/tmp/onnxopt-fold-fixed-shapes"))
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, skipped = [], []
    for title, file, shape in MODELS:
        src = args.models_dir / file
        if not src.exists():
            skipped.append(f"{title} ({src} missing)")
            continue
        cells = {}
        for tool in TOOLS:
            dst = args.out / f"{src.stem}.{tool}.onnx"
            command = [sys.executable, __file__, "--worker", tool, str(src), str(dst), json.dumps(list(shape))]
            _, error = common.run_worker(command, WORKER_TIMEOUT, dst, limit=80)
            cells[tool] = ("failed: " + error, "–") if error else (str(nodes(dst)), f"{max_diff(src, dst, shape):.2e}")
        (fold, fold_diff), (peer, peer_diff) = cells["fold"], cells["onnxsim"]
        rows.append([title, "x".join(map(str, shape)), nodes(src), fold, peer, fold_diff, peer_diff])
        print(common.markdown_row(rows[-1]), flush=True)
    header = ["model", "input", "original", "fold", "onnxsim", "fold max abs diff", "onnxsim max abs diff"]
    text = common.markdown_table(header, rows, "llrrrrr")
    print(text)
    if not args.no_readme:
        import onnxruntime

        command = common.command_line("fold_fixed_shapes.py", argv)
        peer = common.installed("onnxsim")
        environment = (f"{f'onnxsim {peer}, ' if peer else ''}onnxruntime {onnxruntime.__version__}, "
                       f"Python {platform.python_version()}")  # fmt: skip
        doc = " ".join(__doc__.split("\n\n", 2)[2].split())
        lines = [doc, "", *common.run_lines(command, time.perf_counter() - start, environment, skipped, [text])]
        title = "fold_fixed_shapes.py: fold vs onnxsim on OCR models with fixed input shapes"
        common.write_readme_section("fold_fixed_shapes", title, lines, [command])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
