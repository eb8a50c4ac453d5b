"""Where a run's time and memory go: wall seconds and the process's peak RSS at the end of each phase.

Validation is worth its cost only if users keep it on, so the report shows what each phase costs (load, each
pass, the checker, onnxruntime session builds, the reference's and the candidates' runs, latency, save) in
``--json`` and with ``--verbose``. Phases of the same name add up (every pass's comparison runs the candidate).
Peak RSS is the process's high-water mark (``getrusage``), so a phase's figure is the peak reached by its end.
Written here: the standard library's ``resource`` and ``time`` do the measuring.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    count: int = 0
    peak_rss_mib: float = 0.0


@dataclass
class Costs:
    """The phases of one run, in the order they first happened."""

    phases: list[Phase] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        phase = next((p for p in self.phases if p.name == name), None)
        if phase is None:
            phase = Phase(name)
            self.phases.append(phase)
        phase.seconds += seconds
        phase.count += 1
        phase.peak_rss_mib = peak_rss_mib()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)
