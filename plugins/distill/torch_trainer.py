"""The torch backend's trainer: Adam on the distillation loss, early stopping, export with torch.onnx.

An ONNX student is turned into a trainable module by :mod:`.onnx_to_torch`; a user's ``torch.nn.Module``
trains as it is. The student is exported with ``torch.onnx.export`` (the dynamo exporter, torch's
default) under the teacher's input and output names with a dynamic batch dimension. torch runs with
``hyper.threads`` intra-op threads (1 by default): torch's default thread count was measured ~100x slower
on the 2-core machines this runs on, and small students gain nothing from more.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F

from onnxopt.errors import PluginError, UsageError
from onnxopt.training import Split, TrainingJob, TrainingResult, agreement, batches

from .losses import MIN_PROBABILITY, weights
from .onnx_to_torch import OnnxModule, UnsupportedOp

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
    """A torch module and how to read the distilled output from it."""

    def __init__(self, module: torch.nn.Module, job: TrainingJob) -> None:
        self.module = module
        self.job = job

    def outputs(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        result = self.module(*(inputs[name] for name in self.job.input_names))
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    def scores(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The distilled output as logits (log-probabilities for a softmax output)."""
        outputs = self.outputs(inputs)
        out = outputs[self.job.target if len(outputs) > 1 else 0]
        return torch.log(out.clamp_min(MIN_PROBABILITY)) if self.job.probabilities else out


def _tensors(split: Split) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    inputs = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in split.inputs.items()}
    labels = None if split.labels is None else torch.from_numpy(split.labels.astype(np.int64))
    return inputs, torch.from_numpy(split.teacher.astype(np.float32)), labels


def _loss(job: TrainingJob, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    hyper = job.hyper
    soft, hard = weights(hyper.alpha, labels is not None)
    if hyper.loss == "mse":
        term = F.mse_loss(student, teacher)
    else:
        t = hyper.temperature
        term = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="batchmean") * t * t
    if hard:
        term = soft * term + hard * F.cross_entropy(student, labels)
    return term


def _score(job: TrainingJob, student: TorchStudent, split: Split) -> tuple[float, float]:
    """(top-1 agreement with the teacher, -loss): agreement first, the loss breaks its ties (-MSE for ``mse``)."""
    inputs, teacher, labels = _tensors(split)
    student.module.eval()
    with torch.no_grad():
        scores = student.scores(inputs)
        loss = float(_loss(job, scores, teacher, labels))
    student.module.train()
    if job.hyper.loss == "mse":
        return -loss, 0.0
    return agreement(scores.numpy(), teacher.numpy()), -loss


def train(job: TrainingJob, student: TorchStudent) -> TrainingResult:
    """Train ``student`` in place, keeping the weights of the best validation epoch."""
    with _threads(job.hyper.threads):
        return _train(job, student)


def _train(job: TrainingJob, student: TorchStudent) -> TrainingResult:
    hyper = job.hyper
    torch.manual_seed(hyper.seed)
    rng = np.random.default_rng(hyper.seed)
    optimizer = torch.optim.Adam(student.module.parameters(), lr=hyper.lr)
    # cosine decay to zero over the planned epochs: late epochs refine instead of bouncing around
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hyper.epochs) if hyper.cosine else None
    inputs, teacher, labels = _tensors(job.train)
    result = TrainingResult(epochs=0, best_epoch=0, best_score=None)
    best: tuple[float, float] | None = None
    best_state = copy.deepcopy(student.module.state_dict())
    student.module.train()
    for epoch in job.progress(range(1, hyper.epochs + 1), total=hyper.epochs, desc="distill"):
        total = 0.0
        for index in batches(len(job.train), hyper.batch_size, rng):
            rows = torch.from_numpy(index)
            optimizer.zero_grad()
            scores = student.scores({name: value[rows] for name, value in inputs.items()})
            loss = _loss(job, scores, teacher[rows], None if labels is None else labels[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        if schedule is not None:
            schedule.step()
        score = _score(job, student, job.val if job.val is not None else job.train)
        result.epochs = epoch
        result.history.append({"epoch": epoch, "loss": total / len(job.train), "val_score": score[0], "val_loss": -score[1]})
        if best is None or score > best:
            best, result.best_score, result.best_epoch = score, score[0], epoch
            best_state = copy.deepcopy(student.module.state_dict())
        elif hyper.patience and epoch - result.best_epoch >= hyper.patience:
            break
    student.module.load_state_dict(best_state)
    student.module.eval()
    return result


def export(job: TrainingJob, student: TorchStudent) -> Path:
    """Write the student as ONNX with the teacher's names and a dynamic batch dimension."""
    example = tuple(torch.from_numpy(np.ascontiguousarray(job.train.inputs[name][:2])) for name in job.input_names)
    batch = torch.export.Dim("batch")
    dims = tuple({0: batch} for _ in example)
    parameters = inspect.signature(student.module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        dims = (dims,)  # forward(*inputs) takes all inputs as one tuple argument
    try:
        with _quiet_exporter(), _threads(job.hyper.threads), torch.no_grad():
            torch.onnx.export(
                student.module, example, str(job.output), input_names=job.input_names, output_names=job.output_names,
                dynamic_shapes=dims, opset_version=job.opset, dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
    except Exception as exc:  # the exporter's messages run to pages; the report wants its gist
        summary = next((line for line in str(exc).splitlines() if "Error" in line and ":" in line), str(exc).splitlines()[0])
        raise PluginError("distill-torch", f"torch.onnx.export failed: {summary.strip()}") from exc
    return job.output


class TorchTrainer:
    name = "torch"

    def fit(self, job: TrainingJob) -> TrainingResult:
        try:
            module = OnnxModule(job.student) if isinstance(job.student, ir.Model) else job.student
        except UnsupportedOp as exc:
            raise UsageError(f"the ONNX student cannot be trained: {exc}") from exc
        student = TorchStudent(module, job)
        result = train(job, student)
        export(job, student)
        return result
