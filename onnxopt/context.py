"""What a pass, validator or reporter gets besides the model: the run's shared facilities.

One :class:`RunContext` lives for a whole run. Passes read the dataset, the original (reference / teacher)
model, the input shapes the user fixed (``--shape``), a private temporary folder, a seeded RNG, a logger and
a progress-bar factory from it, and record
counters for the report in ``stats`` (the host gives each pass a fresh dict).
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
    from onnxopt.passes import PassRegistry
    from onnxopt.plugins import PluginManager

T = TypeVar("T")
logger = logging.getLogger("onnxopt")


@dataclass
class RunContext:
    """Shared facilities of one run; see the module docstring."""

    plugin_manager: PluginManager
    registry: PassRegistry
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

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A generator seeded from the run's seed, so passes are deterministic for a given seed."""
        return np.random.default_rng([self.seed, salt])

    def load_reference(self) -> ir.Model:
        """The original model (a distillation teacher, a pruning baseline), loaded afresh."""
        from onnxopt import model_io

        if self.reference_path is None:
            raise RuntimeError("this run has no reference model")
        return model_io.load(self.reference_path, check=False)

    def progress(self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "") -> Iterator[T]:
        """A progress bar on a terminal; silent when quiet or when stderr is not a terminal."""
        from tqdm import tqdm

        disable = self.quiet or not sys.stderr.isatty()
        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, file=sys.stderr)
