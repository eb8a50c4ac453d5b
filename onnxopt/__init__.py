"""onnxopt: make exported ONNX models smaller and faster for onnxruntime, and prove they still agree.

The public API is imported lazily so that ``onnxopt --help`` and ``import onnxopt`` stay fast; onnx,
onnxruntime and numpy load only when a function that needs them is called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "optimize": "onnxopt.api",
    "auto": "onnxopt.api",
    "validate": "onnxopt.api",
    "distill": "onnxopt.api",
    "inspect": "onnxopt.api",
    "apply_passes": "onnxopt.api",
    "load": "onnxopt.model_io",
    "save": "onnxopt.model_io",
    "hookimpl": "onnxopt.hookspecs",
    "PassSpec": "onnxopt.passes",
    "option": "onnxopt.passes",
    "SearchDim": "onnxopt.passes",
    "SearchHint": "onnxopt.passes",
    "RunContext": "onnxopt.context",
    "Dataset": "onnxopt.data",
    "Recipe": "onnxopt.recipe",
    "Gates": "onnxopt.gates",
    "Check": "onnxopt.validation",
    "MetricSpec": "onnxopt.metrics",
    "OutputInfo": "onnxopt.metrics",
    "attention_mask": "onnxopt.metrics",
    "load_function": "onnxopt.user_code",
    "REFERENCE": "onnxopt.user_code",
    "ValidationResult": "onnxopt.validation",
    "Report": "onnxopt.report",
    "OnnxoptError": "onnxopt.errors",
    "count_nodes": "onnxopt.summary",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxopt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
