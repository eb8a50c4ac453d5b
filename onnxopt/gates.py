"""Validation gates: the thresholds a candidate model must meet against its reference.

Kept apart from :mod:`onnxopt.validation` (which needs numpy and onnxruntime) so the CLI can build its
``--atol`` / ``--min-cosine`` / ... flags from these fields without importing anything heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from onnxopt.errors import UsageError


@dataclass(frozen=True)
class Gates:
    """Thresholds a candidate must meet; None means "not gated". Field help doubles as CLI help."""

    atol: float | None = field(default=None, metadata={"help": "max absolute difference per element (with rtol)"})
    rtol: float | None = field(default=None, metadata={"help": "max difference relative to the reference (with atol)"})
    min_cosine: float | None = field(default=None, metadata={"help": "min cosine similarity of every output"})
    min_channel_cosine: float | None = field(
        default=None, metadata={"help": "min cosine of the worst channel of every output"}
    )
    min_top1: float | None = field(default=None, metadata={"help": "min top-1 agreement of class-score outputs"})
    max_accuracy_drop: float | None = field(
        default=None, metadata={"help": "max drop in accuracy against the labels (0.01 = one point)"}
    )
    max_latency_ratio: float | None = field(default=None, metadata={"help": "max candidate/reference latency"})
    max_size_ratio: float | None = field(default=None, metadata={"help": "max candidate/reference size on disk"})

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Gates:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown gate(s) {', '.join(unknown)} (valid gates: {', '.join(sorted(names))})")
        try:
            return cls(**{k: None if v is None else float(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"gates must be numbers: {exc}") from None

    def merged(self, other: Gates) -> Gates:
        """These gates with every gate ``other`` sets taking precedence."""
        return dataclasses.replace(self, **{k: v for k, v in dataclasses.asdict(other).items() if v is not None})

    def is_empty(self) -> bool:
        return all(v is None for v in dataclasses.asdict(self).values())
