"""The keras training backend as a plugin: it answers ``onnxopt_distill_trainer`` for a ``keras.Model`` a
user's ``module:function`` built (``onnxopt[tf]`` extra). TensorFlow is imported only to train."""

from __future__ import annotations

import sys
from typing import Any

from onnxopt import hookimpl


@hookimpl(optionalhook=True)
def onnxopt_distill_trainer(backend: str, student: Any) -> Any:
    if backend not in ("keras", "auto") or "keras" not in sys.modules:
        return None
    if not isinstance(student, sys.modules["keras"].Model):
        return None
    from .keras_trainer import KerasTrainer

    return KerasTrainer()
