"""The host's own hook implementations: loading ONNX files, reading datasets, running a pass.

Registered first and marked ``trylast``, so an installed plugin that implements the same hook (a Keras
loader, a dataset reader for a new format, a wrapper around every pass) is asked before these. It loads on
every command, ``--help`` included, so onnx, onnx-ir and numpy are imported only when a hook runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxopt.errors import UsageError
from onnxopt.hookspecs import hookimpl

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxopt.data import Dataset


@hookimpl(trylast=True)
def onnxopt_load_model(path: str, options: dict[str, Any]) -> ir.Model:
    from onnxopt import model_io

    return model_io.load(path, check=options.get("check", True))


@hookimpl(trylast=True)
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> Dataset:
    return open_source(
        source,
        model,
        shapes=options.get("shapes"),
        seed=options.get("seed", 0),
        batch_size=options.get("batch_size"),
    )


def open_source(
    source: str,
    model: ir.Model,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Dataset:
    """Open ``synthetic:N``, an ``.npz`` file, or a folder — the formats the host reads itself."""
    from onnxopt.data import from_arrays, load_arrays
    from onnxopt.synthetic import SYNTHETIC_PREFIX, synthetic

    if source.startswith(SYNTHETIC_PREFIX):
        count_text = source[len(SYNTHETIC_PREFIX) :]
        if not count_text.isdigit() or int(count_text) <= 0:
            raise UsageError(f"{source!r}: expected synthetic:N with N a positive integer")
        return synthetic(int(count_text), model, shapes=shapes, seed=seed, batch_size=batch_size)
    return from_arrays(str(source), load_arrays(source), model, batch_size=batch_size)


@hookimpl(trylast=True)
def onnxopt_run_pass(spec: Any, options: Any, model: ir.Model, context: Any) -> ir.passes.PassResult:
    return spec.create(options, context)(model)
