"""The contract between distillation and a training backend: what a trainer gets and what it gives back.

A backend plugin (torch, keras, or a third party's) answers the ``onnxopt_distill_trainer`` hook with an
object that has a ``name`` and a ``fit(job)`` method (:class:`Trainer`). The distill plugin prepares the
:class:`TrainingJob` — the student, the training inputs with the teacher's outputs on them, labels when
the data has them, the hyperparameters — and the trainer trains the student, writes it as ONNX to
``job.output`` with the teacher's input and output names and a dynamic batch dimension (or in a format a
loader plugin reads, named in ``TrainingResult.model_file``), and returns a :class:`TrainingResult`. numpy only, no
framework imports, so a backend imports it at no cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

Loss = Literal["kl", "mse"]


@dataclass(frozen=True)
class Split:
    """Rows to train or validate on: the model inputs, the teacher's outputs on them, optional labels, and
    optional hidden states: the teacher's intermediate values the student's values of these names are trained
    towards too (MSE + cosine, weighted by ``layer_weight``; a backend that cannot read a student's intermediate
    values trains on the output alone)."""

    inputs: dict[str, np.ndarray]  # input name -> [N, ...]
    teacher: np.ndarray  # [N, classes]: logits, or log-probabilities when the teacher ends in Softmax
    labels: np.ndarray | None = None  # [N] int64 class ids
    hidden: dict[str, np.ndarray] = field(default_factory=dict)  # student value name -> the teacher's [N, ...]

    def __len__(self) -> int:
        return len(self.teacher)

    def rows(self, index: np.ndarray) -> Split:
        labels = None if self.labels is None else self.labels[index]
        hidden = {name: array[index] for name, array in self.hidden.items()}
        return Split({k: v[index] for k, v in self.inputs.items()}, self.teacher[index], labels, hidden)


@dataclass(frozen=True)
class Hyperparameters:
    """How to train: loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(labels), or MSE.

    Adam at ``lr``, decayed on a cosine to zero over ``epochs`` unless ``cosine`` is off."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    cosine: bool = True  # the learning rate decays to zero over ``epochs`` on a cosine
    alpha: float = 0.7
    temperature: float = 4.0
    loss: Loss = "kl"
    patience: int = 10  # epochs without a better validation score before stopping; 0 never stops early
    seed: int = 0
    threads: int = 1  # torch / TF intra-op threads; 1 is fastest for small students on a shared machine


@dataclass
class TrainingJob:
    """Everything a trainer needs; see the module docstring."""

    student: Any  # an onnx_ir.Model, or a framework model built by the user's ``module:function``
    train: Split
    val: Split | None
    input_names: list[str]
    output_names: list[str]  # the teacher's outputs, in order; the student must produce the same
    target: int  # index into output_names of the output distilled on
    probabilities: bool  # the target output is a softmax: the student's output is compared as log-probabilities
    hyper: Hyperparameters
    output: Path  # where to write the trained student as ONNX
    opset: int = 18
    progress: Callable[..., Iterator[Any]] = lambda iterable=None, **_: iter(iterable or ())
    logger: logging.Logger = logging.getLogger("onnxopt")


@dataclass
class TrainingResult:
    """What training did: epochs run, the best validation score (top-1 agreement, or -MSE), its epoch.

    Trainers rank epochs by agreement and break ties by the validation loss, so a plateau of equal
    agreement still moves towards the teacher."""

    epochs: int
    best_epoch: int  # 0: no epoch beat the student as given, which is handed back
    best_score: float | None
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train loss, val score
    #: where the student was written when not as ONNX at ``job.output``: a file a loader plugin reads
    #: (e.g. ``.keras``); its inputs and outputs are renamed, in order, to the teacher's
    model_file: Path | None = None


class Trainer(Protocol):
    name: str

    def fit(self, job: TrainingJob) -> TrainingResult: ...


def batches(count: int, batch_size: int, rng: np.random.Generator) -> Iterable[np.ndarray]:
    """Shuffled row indices in batches of ``batch_size`` (the last one smaller): one epoch."""
    order = rng.permutation(count)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """Fraction of rows where student and teacher pick the same class."""
    return float(np.mean(np.argmax(student, axis=-1) == np.argmax(teacher, axis=-1)))
