"""What the distill plugin asks of training beyond :class:`.training.Hyperparameters`.

A subclass, so a backend that knows only the host contract (a third party's) still gets every field it
expects; the torch backend honours these too. Kept apart from the trainer so nothing here imports a framework.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .training import Hyperparameters


@dataclass(frozen=True)
class DistillHyperparameters(Hyperparameters):
    loss: str = "kl"  # a name from losses.LOSSES other than "auto" (resolved before training)
    max_time: float = 0.0  # seconds of training; 0: no budget. The learning rate decays over the budget.
    device: str = "cpu"  # cpu, cuda (cuda:N), or auto (cuda when torch sees one)
    checkpoint: str = ""  # a file saved after every epoch and resumed from when it exists
    layer_weight: float = 1.0  # weight of the hidden-state term (Split.hidden) beside the output's
    batch_norm: str = "train"  # an ONNX student's BatchNormalization: batch statistics (train) or running ones


def cores() -> int:
    """The cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
