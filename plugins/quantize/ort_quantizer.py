"""The boundary to onnxruntime's quantizer: an onnx_ir model in, a quantized onnx_ir model out.

onnxruntime.quantization does the quantization (it is not re-written here). What this module adds is what a
plain call gets wrong on real models: the model crosses the boundary through a file in the run's temporary
folder (external data kept external, never a >2 GB protobuf in memory); per-channel static quantization of an
opset-11/12 model first upgrades the opset to 13 (its DequantizeLinear ``axis`` does not exist before 13 and
the result silently fails to load); ``quant_pre_process`` is tried and, when its symbolic shape inference
fails as it did on every real model tried, retried without it and then skipped, saying which; calibration
data is read from the pipeline's dataset with a sample cap and a progress bar; the histogram calibrators
(entropy, percentile, distribution) take feeds of different shapes (:func:`histograms_of_any_shape`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common  # not loaded by importing onnx_ir

from onnxopt import save

if TYPE_CHECKING:
    from onnxopt import Dataset, RunContext

logger = logging.getLogger("onnxopt.quantize")

#: Opset from which DequantizeLinear has the per-channel ``axis`` attribute.
PER_CHANNEL_OPSET = 13
#: Opset onnxruntime's MatMulNBits quantizer declares in its output; the model is converted to it first,
#: else ops whose signature changed (ReduceMean's axes became an input in 18) no longer pass the checker.
BLOCK_QUANT_OPSET = 21
#: Models larger than this skip quant_pre_process (protobuf's limit: past it the model only exists as files).
PREPROCESS_MAX_BYTES = 2 << 30


class _FromQuantizerBelowError(logging.Filter):
    """Keeps onnxruntime's quantizer's root-logger warnings (``logging.warning(...)`` in its modules: "Axis 1 is
    out-of-range for weight 'ln1.weight'" on every per-channel run over a layer norm) out of the user's output;
    they go to the ``onnxopt.quantize`` logger at DEBUG instead. Errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or f"{os.sep}onnxruntime{os.sep}quantization{os.sep}" not in record.pathname:
            return True
        logger.debug("onnxruntime.quantization: %s", record.getMessage())
        return False


@contextlib.contextmanager
def quiet_onnxruntime_logs() -> Iterator[None]:
    """onnxruntime's quantizer logs every node at INFO and some warnings through the root logger; keep it to
    its own warnings while it runs."""
    quantization_logger = logging.getLogger("onnxruntime.quantization")
    loggers = [quantization_logger, *(logging.getLogger(name) for name in logging.root.manager.loggerDict
                                      if name.startswith("onnxruntime.quantization."))]  # fmt: skip
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    root_filter = _FromQuantizerBelowError()
    logging.root.addFilter(root_filter)
    try:
        yield
    finally:
        logging.root.removeFilter(root_filter)
        for item, level in zip(loggers, levels):
            item.setLevel(level)


def default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def write_for_onnxruntime(model: ir.Model, path: Path) -> Path:
    """Save the model where onnxruntime's quantizer can read it (external data beside it if large).

    Every node gets a unique name first: exclusions are by name, and onnxruntime's quantizer keys on them.
    """
    copy = model.clone()
    ir.passes.common.NameFixPass()(copy)
    return save(copy, path)


def upgrade_opset(path: Path, target: int, stats: dict[str, Any]) -> Path:
    """Rewrite the model at ``path`` to ``target`` opset with onnx's version converter (in place).

    The converter gets the graph with external tensors left as references into the data file beside
    ``path`` (it keeps them as they are), so a model past protobuf's 2 GiB limit converts without its
    weights ever being loaded or rewritten; only the small .onnx file changes.
    """
    proto = onnx.load(str(path), load_external_data=False)
    current = default_opset(proto)
    if current >= target:
        return path
    converted = onnx.version_converter.convert_version(proto, target)
    # the converter leaves the IR version; opset 21 (int4) needs IR 10
    converted.ir_version = max(converted.ir_version, onnx.helper.find_min_ir_version_for(converted.opset_import))
    path.write_bytes(converted.SerializeToString())
    stats["opset_upgraded"] = f"{current} -> {target}"
    return path


def preprocess(path: Path, out: Path, stats: dict[str, Any]) -> Path:
    """onnxruntime's quant_pre_process, falling back when its shape inference fails; returns the file to use."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path, out = path.absolute(), out.absolute()
    data = path.with_name(path.name + ".data")  # where write_for_onnxruntime puts external data
    if path.stat().st_size + (data.stat().st_size if data.exists() else 0) > PREPROCESS_MAX_BYTES:
        stats["preprocess"] = (f"skipped: the model is over {PREPROCESS_MAX_BYTES >> 30} GiB and quant_pre_process "
                               "loads it whole (3x its size in memory on a 2.4 GB model)")  # fmt: skip
        return path
    large = data.exists()
    for skip_symbolic in (False, True):
        try:
            # its failing symbolic shape inference drops sym_shape_infer_temp.onnx into the current directory
            with contextlib.chdir(out.parent):
                quant_pre_process(str(path), str(out), skip_symbolic_shape=skip_symbolic, skip_optimization=True,
                                  save_as_external_data=large)  # fmt: skip
            stats["preprocess"] = "quant_pre_process" + (" without symbolic shape inference" if skip_symbolic else "")
            return out
        except Exception as exc:  # onnxruntime raises plain Exceptions for "Incomplete symbolic shape inference"
            stats["preprocess"] = f"skipped: quant_pre_process failed ({type(exc).__name__}: {str(exc)[:120]})"
            logger.info("quant_pre_process failed (skip_symbolic_shape=%s): %s", skip_symbolic, exc)
    return path


@contextlib.contextmanager
def histograms_of_any_shape() -> Iterator[None]:
    """While it lasts, onnxruntime's histogram calibrators accept feeds of different shapes.

    Its ``HistogramCollector`` stacks each tensor's outputs over the calibration feeds with ``np.asarray``, which
    raises on a last batch smaller than the others, on images of other sizes and on other sequence lengths
    (onnxruntime issue 18792; a fix, flattening first, is proposed upstream in pull request 32514). A histogram
    only reads the values, so each tensor's outputs are flattened into one array before the collector sees them:
    the same histogram where the shapes agree."""
    try:
        from onnxruntime.quantization.calibrate import HistogramCollector
    except ImportError:  # an onnxruntime without the class has nothing of it to work around
        yield
        return
    collect = HistogramCollector.collect

    def flattened(self: Any, name_to_arr: dict[str, Any]) -> Any:
        flat = {name: np.concatenate([np.ravel(a) for a in arrays]) if isinstance(arrays, list) and arrays else arrays
                for name, arrays in name_to_arr.items()}  # fmt: skip
        return collect(self, flat)

    HistogramCollector.collect = flattened
    try:
        yield
    finally:
        HistogramCollector.collect = collect


class DatasetReader:
    """onnxruntime's CalibrationDataReader over the pipeline's dataset, capped at ``limit`` samples."""

    def __init__(self, dataset: Dataset, limit: int, context: RunContext, input_names: set[str]) -> None:
        self._feeds = self._capped(dataset, limit)
        self._progress = context.progress(total=min(limit, dataset.num_samples), desc="calibrate")
        self._names = input_names

    @staticmethod
    def _capped(dataset: Dataset, limit: int) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        for feed in dataset.feeds():
            if seen >= limit:
                return
            rows = _rows(feed, dataset)
            if seen + rows > limit:  # trim the last batch to the cap where the rows are on axis 0
                feed = {k: v[: limit - seen] if _is_batched(k, dataset) else v for k, v in feed.items()}
                rows = limit - seen
            seen += rows
            yield feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        if feed is None:
            self._progress.close()
            return None
        self._progress.update(_rows(feed, None))
        return {k: v for k, v in feed.items() if k in self._names}

    def rewind(self) -> None:  # onnxruntime calls it for some calibrators; one pass is all we offer
        pass

    # onnxruntime's qdq_loss_debug iterates a reader like its CalibrationDataReader does
    def __iter__(self) -> DatasetReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _is_batched(name: str, dataset: Dataset | None) -> bool:
    return dataset is None or dataset.is_batched(name)


def _rows(feed: dict[str, np.ndarray], dataset: Dataset | None) -> int:
    for name, array in feed.items():
        if _is_batched(name, dataset) and array.ndim:
            return int(array.shape[0])
    return 1
