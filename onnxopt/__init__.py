"""onnxopt: make exported ONNX models smaller and faster for onnxruntime, and prove they still agree.

The public API is imported lazily so that ``onnxopt --help`` and ``import onnxopt`` stay fast; onnx,
onnxruntime and numpy load only when a function that needs them is called. This façade is also the whole import
surface of a plugin: a plugin imports names from ``onnxopt`` and the graph helpers from :mod:`onnxopt.graph`,
nothing else of the host (tests/host/test_architecture.py holds the built-in plugins to it).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # the Python API
    "optimize": "onnxopt.api",
    "auto": "onnxopt.api",
    "validate": "onnxopt.api",
    "inspect": "onnxopt.api",
    "apply_passes": "onnxopt.api",
    "load": "onnxopt.model_io",
    "save": "onnxopt.model_io",
    "save_with_outputs": "onnxopt.model_io",
    "check_writable": "onnxopt.model_io",
    "Recipe": "onnxopt.recipe",
    "Gates": "onnxopt.gates",
    "ValidationResult": "onnxopt.validation",
    "Report": "onnxopt.report",
    "KEPT": "onnxopt.report",
    "OnnxoptError": "onnxopt.errors",
    "UsageError": "onnxopt.errors",
    "DataError": "onnxopt.errors",
    "ModelError": "onnxopt.errors",
    "PluginError": "onnxopt.errors",
    # writing a plugin: hooks, passes, the run context, data, comparisons, metrics, commands
    "hookimpl": "onnxopt.hookspecs",
    "hookspec": "onnxopt.hookspecs",
    "PassSpec": "onnxopt.passes",
    "option": "onnxopt.passes",
    "PassOptions": "onnxopt.passes",
    "InPlacePluginPass": "onnxopt.plugin_pass",
    "FunctionalPluginPass": "onnxopt.plugin_pass",
    "SearchDim": "onnxopt.passes",
    "SearchHint": "onnxopt.passes",
    "RunContext": "onnxopt.context",
    "Dataset": "onnxopt.data",
    "InputSpec": "onnxopt.data",
    "input_specs": "onnxopt.data",
    "from_arrays": "onnxopt.data",
    "load_arrays": "onnxopt.data",
    "LABELS_KEY": "onnxopt.data",
    "DEFAULT_BATCH_SIZE": "onnxopt.data",
    "Check": "onnxopt.validation",
    "compare": "onnxopt.validation",
    "open_session": "onnxopt.validation",
    "open_reference": "onnxopt.validation",
    "Reference": "onnxopt.validation",
    "MetricSpec": "onnxopt.metrics",
    "OutputInfo": "onnxopt.metrics",
    "attention_mask": "onnxopt.metrics",
    "ctc_decode": "onnxopt.metrics",
    "CTC_BLANK": "onnxopt.metrics",
    "load_function": "onnxopt.user_code",
    "REFERENCE": "onnxopt.user_code",
    "count_nodes": "onnxopt.summary",
    "count_parameters": "onnxopt.summary",
    "emit_report": "onnxopt.cli",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxopt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
