"""What a pass, validator or reporter gets besides the model: the run's shared facilities.

One :class:`RunContext` lives for a whole run. Passes read the dataset, the original (reference / teacher)
model, the input shapes the user fixed (``--shape``), the gates, a private temporary folder, a seeded RNG,
a logger and a progress-bar factory from it, and record counters for the report in ``stats`` (the host
gives each pass a fresh dict); a pass that retrains the model names in ``not_class_scores`` the outputs it did not
train as class scores, so the verdict does not judge them by arg-max. It is deliberately narrow: one pass uses
another through :meth:`run_pass` (through the ``onnxopt_run_pass`` hook, so wrappers see it), opens data with
:meth:`open_dataset`, loads a model with :meth:`load`, compares against the run's own reference session through
:meth:`reference`, and calls hooks a plugin declared itself through :attr:`hook`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from onnxopt.costs import Costs

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxopt.data import Dataset
    from onnxopt.gates import Gates
    from onnxopt.metrics import MetricRegistry
    from onnxopt.session import Session
    from onnxopt.validation import Reference

T = TypeVar("T")
logger = logging.getLogger("onnxopt")


@dataclass
class NestedResult:
    """What :meth:`RunContext.run_pass` gives back: the pass's model, whether it changed, and its own counters."""

    model: ir.Model
    modified: bool
    stats: dict[str, Any]


@dataclass
class RunContext:
    """Shared facilities of one run; see the module docstring."""

    session: Session = field(repr=False)  # the host's; passes use the methods below, never the session itself
    workdir: Path
    reference_path: Path | None = None
    dataset: Dataset | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    gates: Gates | None = None  # the run's validation gates, for passes that search against them
    seed: int = 0
    quiet: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    costs: Costs = field(default_factory=Costs)  # time and peak memory per phase of the run
    logger: logging.Logger = logger
    #: outputs that look like class scores ([batch, k]) but are not, as a pass that retrained the model knows (a
    #: student distilled as an embedding or a regression head): the retrained verdict judges them by cosine, not by
    #: arg-max agreement
    not_class_scores: set[str] = field(default_factory=set)
    #: the run's open reference session (outputs cached per feed), shared by every comparison; None for a large
    #: model, whose outputs are recorded per dataset instead
    live_reference: Reference | None = field(default=None, repr=False)

    @property
    def hook(self) -> Any:
        """The plugins' hooks, for a hook a plugin declared itself (``onnxopt_addhooks``)."""
        return self.session.hook

    @property
    def metric_registry(self) -> MetricRegistry:
        """The task metrics the plugins registered (the validation's judges)."""
        return self.session.metrics

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded from the run's seed, so passes are deterministic for a given seed."""
        return np.random.default_rng([self.seed, salt])

    def has_pass(self, name: str) -> bool:
        """Whether a loaded plugin registered the pass ``name``."""
        return name in self.session.passes

    def run_pass(self, name: str, model: ir.Model, **options: Any) -> NestedResult:
        """Run the registered pass ``name`` on ``model`` (which it may change: pass a clone to keep it).

        It goes through the ``onnxopt_run_pass`` hook like every step of a run; its counters are returned in
        the result, and the calling pass's ``stats`` are left as they were.
        """
        step = self.session.passes.configure(name, options)
        outer, self.stats = self.stats, {}
        try:
            result = self.session.run_pass(step.spec, step.options, model, self)
        finally:
            inner, self.stats = self.stats, outer
        return NestedResult(result.model, bool(result.modified), inner)

    def load(self, path: str | Path, **options: Any) -> ir.Model:
        """Load a model file through the loader plugins (ONNX, or what a loader plugin reads)."""
        return self.session.load(path, **options)

    def load_reference(self) -> ir.Model:
        """The original model (a distillation teacher, a pruning baseline), loaded afresh."""
        if self.reference_path is None:
            raise RuntimeError("this run has no reference model")
        return self.session.load(self.reference_path, check=False)

    def reference(self, data: Dataset | None) -> Reference:
        """The original's side of comparisons on ``data`` (pass it as ``compare(..., opened=...)``): the run's own
        open session, whose outputs every comparison of the run shares, or for a model too large to hold twice
        its outputs on ``data`` recorded once. One onnxruntime session per model, not one per search."""
        if self.live_reference is not None:
            return self.live_reference
        if self.reference_path is None:
            raise RuntimeError("this run has no reference model")
        from onnxopt.validation import open_reference

        return open_reference(self.reference_path, data, context=self)

    def open_dataset(self, source: str, model: ir.Model, *, batch_size: int | None = None) -> Dataset:
        """Open a dataset for ``model`` through the dataset plugins, with this run's shapes and seed."""
        return self.session.open_dataset(source, model, shapes=self.shapes, seed=self.seed, batch_size=batch_size)

    def progress(self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar on a terminal; silent when quiet or when stderr is not a terminal."""
        from tqdm import tqdm

        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, file=sys.stderr)
