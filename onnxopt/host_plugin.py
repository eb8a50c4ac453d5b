"""The host's own hook implementations: loading ONNX files, reading datasets, running a pass.

Registered first and marked ``trylast``, so an installed plugin that implements the same hook (a Keras
loader, a dataset reader for a new format, a wrapper around every pass) is asked before these.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxopt import data, model_io
from onnxopt.hookspecs import hookimpl


@hookimpl(trylast=True)
def onnxopt_load_model(path: str, options: dict[str, Any]) -> ir.Model:
    return model_io.load(path, check=options.get("check", True))


@hookimpl(trylast=True)
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> data.Dataset:
    return data.open_source(
        source,
        model,
        shapes=options.get("shapes"),
        seed=options.get("seed", 0),
        batch_size=options.get("batch_size"),
    )


@hookimpl(trylast=True)
def onnxopt_run_pass(spec: Any, options: Any, model: ir.Model, context: Any) -> ir.passes.PassResult:
    return spec.create(options, context)(model)
