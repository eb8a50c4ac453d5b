"""The torch training backend as a plugin: it answers ``onnxopt_distill_trainer`` for ONNX students and
``torch.nn.Module`` s. torch is imported only when a student is to be trained (``onnxopt[torch]`` extra), and
neither torch nor onnx_ir to tell a student apart: a student of one means it is loaded already."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from onnxopt import hookimpl


@hookimpl(optionalhook=True)
def onnxopt_distill_trainer(backend: str, student: Any) -> Any:
    if backend not in ("torch", "auto"):
        return None
    torch, ir = sys.modules.get("torch"), sys.modules.get("onnx_ir")
    is_module = torch is not None and isinstance(student, torch.nn.Module)
    if not (is_module or (ir is not None and isinstance(student, ir.Model))):
        return None
    if importlib.util.find_spec("torch") is None:
        return None  # the distill plugin says which extra to install
    from .torch_trainer import TorchTrainer

    return TorchTrainer()
