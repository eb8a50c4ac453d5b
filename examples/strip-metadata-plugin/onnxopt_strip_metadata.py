"""An example third-party onnxopt plugin: one pass, registered through the ``onnxopt`` entry point.

Exporters leave doc strings (often source-file paths and stack traces) and metadata in a model; this pass
removes them, which shrinks the file and keeps build paths out of a shipped model. It is here to show the
whole plugin contract a third party needs: ``onnxopt.hookimpl``, ``onnxopt.PassSpec`` and ``onnxopt.option``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

import onnxopt


@dataclass(frozen=True)
class StripOptions:
    keep_producer: bool = onnxopt.option(True, "keep producer_name / producer_version")


class StripMetadataPass(ir.passes.InPlacePass):
    def __init__(self, options: StripOptions, context: onnxopt.RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        cleared = 0
        for item in [model, *model.graphs(), *ir.traversal.RecursiveGraphIterator(model.graph)]:
            if item.doc_string:
                item.doc_string = None
                cleared += 1
            if item.metadata_props:
                item.metadata_props.clear()
                cleared += 1
        if not self.options.keep_producer and (model.producer_name or model.producer_version):
            model.producer_name = model.producer_version = None
            cleared += 1
        self.context.stats["cleared"] = cleared
        return ir.passes.PassResult(model, modified=cleared > 0)


@onnxopt.hookimpl
def onnxopt_register_passes(register: Callable[[onnxopt.PassSpec], None]) -> None:
    register(
        onnxopt.PassSpec(
            name="strip-metadata",
            summary="remove doc strings and metadata properties (and optionally the producer)",
            create=StripMetadataPass,
            options=StripOptions,
        )
    )
