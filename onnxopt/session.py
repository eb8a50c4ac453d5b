"""The host assembled once: plugin manager, pass and metric registries, loading models, opening datasets.

Every entry point (optimize, validate, apply_passes, auto and its trials, the CLI's listings) builds a
:class:`Session` instead of wiring pluggy, registries and contexts by hand, and every pass, nested ones
included, runs through :meth:`Session.run_pass`, i.e. through the ``onnxopt_run_pass`` hook, so a wrapper
plugin sees them all. A pass never sees the session: its :class:`~onnxopt.context.RunContext` is the narrow
face of it (run a pass, open a dataset, load a model).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxopt.context import RunContext
from onnxopt.data import Dataset
from onnxopt.errors import ModelError, OnnxoptError, UsageError
from onnxopt.metrics import MetricRegistry
from onnxopt.passes import PassRegistry, PassSpec
from onnxopt.plugins import PluginManager, get_plugin_manager


class Session:
    """The loaded plugins and what they registered; see the module docstring."""

    def __init__(self, plugins: Sequence[str] = (), *, quiet: bool = True) -> None:
        self.plugin_manager: PluginManager = get_plugin_manager(plugins)
        self.quiet = quiet

    @property
    def hook(self) -> Any:
        return self.plugin_manager.hook

    @functools.cached_property
    def passes(self) -> PassRegistry:
        return PassRegistry.from_plugins(self.plugin_manager)

    @functools.cached_property
    def metrics(self) -> MetricRegistry:
        return MetricRegistry.from_plugins(self.plugin_manager)

    def load(self, path: str | Path, **options: Any) -> ir.Model:
        """Load a model through the loader plugins (the host's ONNX loader answers last)."""
        try:
            model = self.hook.onnxopt_load_model(path=str(path), options=options)
        except OnnxoptError:
            raise
        except Exception as exc:
            raise ModelError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
        if model is None:
            raise ModelError(f"{path}: no loader plugin can read this file")
        return model

    def open_dataset(
        self, source: str, model: ir.Model, *, shapes: Any = None, seed: int = 0, batch_size: int | None = None
    ) -> Dataset:
        """Open ``source`` through the dataset plugins (the host's .npz / .npy / synthetic reader answers last)."""
        options = {"shapes": dict(shapes or {}), "seed": seed, "batch_size": batch_size}
        dataset = self.hook.onnxopt_open_dataset(source=source, model=model, options=options)
        if dataset is None:
            raise UsageError(f"{source}: no dataset plugin can read it")
        return dataset

    def run_pass(self, spec: PassSpec, options: Any, model: ir.Model, context: RunContext) -> ir.passes.PassResult:
        """Run one configured pass through the ``onnxopt_run_pass`` hook and check what it returned."""
        result = self.hook.onnxopt_run_pass(spec=spec, options=options, model=model, context=context)
        if not isinstance(result, ir.passes.PassResult) or not isinstance(result.model, ir.Model):
            raise TypeError(f"returned {type(result).__name__}, not an onnx_ir PassResult with a Model")
        return result

    @contextmanager
    def context(self, **fields: Any) -> Iterator[RunContext]:
        """A run context with a private temporary folder, removed when the block ends."""
        with tempfile.TemporaryDirectory(prefix="onnxopt-") as workdir:
            yield RunContext(self, Path(workdir), quiet=self.quiet, **fields)
