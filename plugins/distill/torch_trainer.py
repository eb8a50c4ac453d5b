"""The torch backend's trainer: Adam on the distillation loss, early stopping, export with torch.onnx.

An ONNX student is turned into a trainable module by :mod:`.onnx_to_torch`; a user's ``torch.nn.Module``
trains as it is. One loop over optimizer steps drives a progress bar (train loss, held-out score of the
loss, best so far); the learning rate decays on a cosine over the planned steps or the time budget
(``max_time``), whichever ends first; after each epoch (and when the budget runs out) the held-out score
is measured, the best weights kept, and with ``checkpoint`` the whole run state saved, so an interrupted
run resumes where its last epoch ended. Hidden states the job pairs with the teacher's (``Split.hidden``, a depth
student's ``match_layers``) are read from the ONNX student as it runs (:meth:`.OnnxModule.capture`) and add their
MSE + cosine, weighted by ``layer_weight``. Deterministic for a seed when no time budget cuts it short. torch
runs with ``threads`` intra-op threads (0: every core this process may use) on ``device``.
The student is exported with ``torch.onnx.export`` (the dynamo exporter, torch's default) under the
teacher's input and output names with a dynamic batch dimension.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from onnxopt import PluginError, UsageError

from .hyper import DistillHyperparameters, cores
from .onnx_to_torch import OnnxModule, UnsupportedOp
from .torch_losses import Score, log_probabilities, objective, teacher_term
from .training import Split, TrainingJob, TrainingResult, batches

_EXPORTER_LOGGERS = ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._dynamo")


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing torchvision op; a user sees only onnxopt's own output."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class TorchStudent:
    """A torch module and how to read the distilled output from it.

    ``log_output``: the module computes the distilled softmax output as log-probabilities already
    (:meth:`.OnnxModule.log_softmax_output`), so no log is taken of it."""

    def __init__(self, module: torch.nn.Module, job: TrainingJob, log_output: bool = False) -> None:
        self.module = module
        self.job = job
        self.log_output = log_output

    def outputs(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        result = self.module(*(inputs[name] for name in self.job.input_names))
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    def scores(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The distilled output as the loss reads it (log-probabilities for a softmax output)."""
        outputs = self.outputs(inputs)
        out = outputs[self.job.target if len(outputs) > 1 else 0]
        return log_probabilities(out) if self.job.probabilities and not self.log_output else out


_Tensors = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]


def _float(array: np.ndarray) -> torch.Tensor:
    """As float32 torch; a memory-mapped float32 array stays mapped (pages are read when a batch needs them)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _tensors(split: Split) -> _Tensors:
    """(inputs, teacher outputs, labels, hidden states) of ``split`` as torch tensors."""
    inputs = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in split.inputs.items()}
    labels = None if split.labels is None else torch.from_numpy(split.labels.astype(np.int64))
    return inputs, _float(split.teacher), labels, {name: _float(a) for name, a in split.hidden.items()}


def _hyper(job: TrainingJob) -> DistillHyperparameters:
    """The job's hyperparameters with the distill plugin's fields (defaults for a host-only object)."""
    hyper = job.hyper
    return hyper if isinstance(hyper, DistillHyperparameters) else DistillHyperparameters(**vars(hyper))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r}: torch sees no CUDA device here (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"device {name!r}: {exc}") from exc


class _Run:
    """One training run: the data on its device, the objective, the held-out score."""

    def __init__(self, job: TrainingJob, student: TorchStudent, device: torch.device) -> None:
        self.job, self.student, self.device = job, student, device
        self.hyper = _hyper(job)
        self.train = _tensors(job.train)

    def rows(self, split: _Tensors, index: np.ndarray) -> _Tensors:
        inputs, teacher, labels, hidden = split
        rows = torch.from_numpy(index)
        moved = {name: value[rows].to(self.device) for name, value in inputs.items()}
        hidden = {name: value[rows].to(self.device) for name, value in hidden.items()}
        return moved, teacher[rows].to(self.device), None if labels is None else labels[rows].to(self.device), hidden

    def loss(self, inputs, teacher, labels, hidden) -> torch.Tensor:
        h = self.hyper
        loss = objective(h.loss, h.alpha, h.temperature, self.student.scores(inputs), teacher, labels)
        if not hidden:
            return loss
        captured = self.student.module.captured
        for name, target in hidden.items():
            if captured[name].shape != target.shape:
                raise UsageError(f"match_layers: the student's {name!r} is {tuple(captured[name].shape)}, the "
                                 f"teacher's {tuple(target.shape)}: the kept layers must keep the teacher's "
                                 "width")  # fmt: skip
        term = sum(teacher_term("embedding", captured[name], target, 1.0) for name, target in hidden.items())
        return loss + h.layer_weight * term / len(hidden)

    def score(self, split: Split) -> tuple[float, float]:
        """(held-out score of the loss, -loss): the score first, the loss breaks its ties."""
        tensors = _tensors(split)
        meter, total = Score(self.hyper.loss), 0.0
        self.student.module.eval()
        with torch.no_grad():
            for start in range(0, len(split), self.hyper.batch_size):
                inputs, teacher, labels, _ = self.rows(
                    tensors, np.arange(start, min(start + self.hyper.batch_size, len(split)))
                )
                scores = self.student.scores(inputs)
                meter.update(scores, teacher)
                total += float(
                    objective(self.hyper.loss, self.hyper.alpha, self.hyper.temperature, scores, teacher, labels)
                ) * len(teacher)
        self.student.module.train()
        return meter.value(), -total / len(split)


def train(job: TrainingJob, student: TorchStudent) -> TrainingResult:
    """Train ``student`` in place, keeping the weights of the best validation epoch (0: as given)."""
    hyper = _hyper(job)
    with _threads(hyper.threads or cores()):
        return _train(job, student, _device(hyper.device))


def _learning_rate(hyper: DistillHyperparameters, step: int, total: int, elapsed: float) -> float:
    """Cosine decay to zero over the planned steps, or over the time budget when that ends first."""
    if not hyper.cosine:
        return hyper.lr
    done = step / total
    if hyper.max_time:
        done = max(done, elapsed / hyper.max_time)
    return hyper.lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def _train(job: TrainingJob, student: TorchStudent, device: torch.device) -> TrainingResult:
    hyper = _hyper(job)
    torch.manual_seed(hyper.seed)
    student.module.to(device)
    run = _Run(job, student, device)
    rng = np.random.default_rng(hyper.seed)
    optimizer = torch.optim.Adam(student.module.parameters(), lr=hyper.lr)
    result = TrainingResult(epochs=0, best_epoch=0, best_score=None)
    state = {"best": None, "best_state": copy.deepcopy(student.module.state_dict())}
    checkpoint = Path(hyper.checkpoint) if hyper.checkpoint else None
    first_epoch = (
        _resume(checkpoint, student, optimizer, rng, result, state) if checkpoint and checkpoint.exists() else 0
    )
    if first_epoch == 0:  # the student as given is the one to beat: training that never does hands it back
        state["best"] = run.score(job.val if job.val is not None else job.train)
        result.best_score = state["best"][0]
    per_epoch = -(-len(job.train) // hyper.batch_size)
    total = hyper.epochs * per_epoch
    bar = job.progress(range(first_epoch * per_epoch, total), total=total, desc="distill")
    started, order, running, seen = time.monotonic(), [], 0.0, 0
    student.module.train()
    for step in bar:
        epoch, within = divmod(step, per_epoch)
        if within == 0:
            order, running, seen = batches(len(job.train), hyper.batch_size, rng), 0.0, 0
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(hyper, step, total, time.monotonic() - started)
        optimizer.zero_grad()
        loss = run.loss(*run.rows(run.train, order[within]))
        loss.backward()
        optimizer.step()
        running, seen = running + float(loss.detach()) * len(order[within]), seen + len(order[within])
        out_of_time = bool(hyper.max_time) and time.monotonic() - started >= hyper.max_time
        if within < per_epoch - 1 and not out_of_time:
            continue
        score = run.score(job.val if job.val is not None else job.train)
        result.epochs = epoch + 1
        result.history.append({"epoch": epoch + 1, "loss": running / seen, "val_score": score[0], "val_loss": -score[1],
                               "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
        if state["best"] is None or score > state["best"]:
            state["best"], result.best_score, result.best_epoch = score, score[0], epoch + 1
            state["best_state"] = copy.deepcopy(student.module.state_dict())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{running / seen:.4g}", held_out=f"{score[0]:.4f}", best=f"{result.best_score:.4f}")
        if checkpoint:
            _save(checkpoint, epoch + 1, student, optimizer, rng, result, state)
        if out_of_time or (hyper.patience and epoch + 1 - result.best_epoch >= hyper.patience):
            result.history[-1]["stopped"] = "time budget" if out_of_time else "patience"
            break
    if hasattr(bar, "close"):
        bar.close()
    student.module.load_state_dict(state["best_state"])
    student.module.to("cpu").eval()
    return result


def _save(path: Path, epoch: int, student: TorchStudent, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
          result: TrainingResult, state: dict[str, Any]) -> None:  # fmt: skip
    """Everything a resumed run needs to continue as if never interrupted, written atomically."""
    payload = {
        "epoch": epoch, "model": student.module.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": result.history,
        "best": state["best"], "best_epoch": result.best_epoch, "best_score": result.best_score,
        "best_state": state["best_state"],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    torch.save(payload, partial)
    os.replace(partial, path)


def _resume(path: Path, student: TorchStudent, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
            result: TrainingResult, state: dict[str, Any]) -> int:  # fmt: skip
    """Load a checkpoint into the run; returns the number of epochs it had finished."""
    try:
        payload = torch.load(path, weights_only=False)
        student.module.load_state_dict(payload["model"])
    except Exception as exc:  # a checkpoint of another student, or not a checkpoint
        raise UsageError(f"checkpoint {path}: cannot resume from it ({type(exc).__name__}: {exc})") from exc
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["rng"]
    torch.set_rng_state(payload["torch_rng"])
    result.history[:] = payload["history"]
    result.epochs, result.best_epoch, result.best_score = payload["epoch"], payload["best_epoch"], payload["best_score"]
    state["best"], state["best_state"] = payload["best"], payload["best_state"]
    return payload["epoch"]


def _symbolic_axes(job: TrainingJob, name: str) -> list[int]:
    """Axes after the batch that the ONNX student's input ``name`` leaves symbolic."""
    if not isinstance(job.student, ir.Model):
        return []
    value = next((v for v in job.student.graph.inputs if v.name == name), None)
    if value is None or value.shape is None:
        return []
    return [axis for axis, dim in enumerate(value.shape) if axis > 0 and not isinstance(dim, int)]


def export(job: TrainingJob, student: TorchStudent) -> Path:
    """Write the student as ONNX with the teacher's names and a dynamic batch dimension; an ONNX student's other
    symbolic dimensions (sequence length, image size) stay dynamic unless the traced code fixes them, or unless
    torch.export cannot solve their arithmetic (PP-OCR rec's width), when only the batch stays dynamic."""
    example = tuple(torch.from_numpy(np.ascontiguousarray(job.train.inputs[name][:2])) for name in job.input_names)
    batch = torch.export.Dim("batch")
    free = tuple(
        {0: batch, **{axis: torch.export.Dim.AUTO for axis in _symbolic_axes(job, name)}} for name in job.input_names
    )
    attempts = [free, tuple({0: batch} for _ in example)] if any(len(d) > 1 for d in free) else [free]
    parameters = inspect.signature(student.module.forward).parameters.values()
    wrap = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)  # forward(*inputs): one tuple argument
    for attempt, dims in enumerate(attempts):
        try:
            with _quiet_exporter(), _threads(job.hyper.threads or cores()), torch.no_grad():
                torch.onnx.export(
                    student.module, example, str(job.output), input_names=job.input_names,
                    output_names=job.output_names, dynamic_shapes=(dims,) if wrap else dims, opset_version=job.opset,
                    dynamo=True, external_data=False, verbose=False,
                )  # fmt: skip
            return job.output
        except Exception as exc:  # the exporter's messages run to pages; the report wants its gist
            if attempt + 1 < len(attempts):
                job.logger.info(
                    "export with dynamic %s failed; exporting with a dynamic batch only", "/".join(map(str, free))
                )
                continue
            summary = next(
                (line for line in str(exc).splitlines() if "Error" in line and ":" in line), str(exc).splitlines()[0]
            )
            raise PluginError("distill-torch", f"torch.onnx.export failed: {summary.strip()}") from exc
    return job.output


class TorchTrainer:
    name = "torch"

    def fit(self, job: TrainingJob) -> TrainingResult:
        try:
            module = (
                OnnxModule(job.student, batch_statistics=_hyper(job).batch_norm == "train")
                if isinstance(job.student, ir.Model)
                else job.student
            )
        except UnsupportedOp as exc:
            raise UsageError(f"the ONNX student cannot be trained: {exc}") from exc
        target = None
        if isinstance(module, OnnxModule) and job.probabilities:  # by position, as scores() reads it
            target = module.output_names[job.target if len(module.output_names) > 1 else 0]
        log_output = target is not None and module.log_softmax_output(target)
        if job.train.hidden:
            if not isinstance(module, OnnxModule):
                raise UsageError("hidden states are matched by name in an ONNX student; this student is a module")
            try:
                module.capture(tuple(job.train.hidden))
            except UnsupportedOp as exc:
                raise UsageError(f"match_layers: {exc}") from exc
        student = TorchStudent(module, job, log_output)
        result = train(job, student)
        if job.train.hidden:
            module.capture(())  # the exported graph computes the outputs only
        if log_output:
            module.log_softmax_output(target, enabled=False)  # the student ships its Softmax
        export(job, student)
        return result
