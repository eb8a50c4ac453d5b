"""Task metrics: how an output is judged by what it is for, not only by how close its numbers are.

A cosine of 0.98 can be a CTC recogniser that reads every string the original reads, and a cosine of 0.9999 a
detector whose class scores collapsed beside large box coordinates. Plugins register :class:`MetricSpec`\\ s
(hook ``onnxopt_register_metrics``); each may claim outputs it recognises (``detect``) so that ``optimize``'s
default verdict judges them by their task, and any can be asked for by name per output. A metric streams
like the rest of validation: ``add`` gets each feed's reference and candidate arrays, ``value`` the figure,
always "higher is better" and gated as ``value >= threshold``. A user's own function is a metric too
(``file.py:function`` or ``module:function``, see :func:`user_function_metric`).

Written here: the contract and the selection, and the readings more than one plugin needs (an attention mask,
greedy CTC decoding: the metrics and distillation's ``ctc`` loss); the metrics themselves live in plugins
(built-in: ``metrics``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from onnxopt.errors import UsageError
from onnxopt.user_code import is_reference, load_function

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class OutputInfo:
    """What a metric may look at to decide whether it applies: the output and the first feed's arrays."""

    name: str
    index: int
    reference: np.ndarray  # the reference's output on the first feed
    feed: Mapping[str, np.ndarray]  # the first feed (e.g. to find an attention mask)
    output_count: int = 1


class Metric(Protocol):
    """One output's streaming figure."""

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None: ...

    def value(self) -> float: ...


@dataclass(frozen=True)
class MetricSpec:
    """A named task metric: what it measures, its default threshold, and which outputs it fits."""

    name: str
    summary: str  # one line: what the figure is, e.g. "argmax sequences equal after collapsing CTC blanks"
    threshold: float  # the default gate; the figure must be >= it
    create: Callable[[OutputInfo], Metric | None]  # None: the metric does not apply to this output
    detect: Callable[[OutputInfo], bool] = field(default=lambda info: False)  # claims outputs for the default verdict
    plugin: str = ""


@dataclass(frozen=True)
class MetricRequest:
    """``--metric [OUTPUT=]NAME[>=THRESHOLD]``: a metric asked for, on one output or every output it fits."""

    metric: str
    output: str | None = None
    threshold: float | None = None

    @property
    def text(self) -> str:
        out = f"{self.output}=" if self.output else ""
        return f"{out}{self.metric}" + (f">={self.threshold:g}" if self.threshold is not None else "")


_REQUEST = re.compile(r"^(?:(?P<output>[^=>]+)=)?(?P<metric>[^=>]+?)(?:>=(?P<threshold>.+))?$")
#: ``--metric none`` turns the automatic choice off: every output is judged by the generic gates.
NO_METRIC = "none"
AUTO = "auto"


def parse_request(text: str) -> MetricRequest:
    """Parse ``[OUTPUT=]NAME[>=THRESHOLD]``; a malformed request is a UsageError."""
    match = _REQUEST.match(text.strip())
    if not match:
        raise UsageError(f"--metric {text!r}: expected [OUTPUT=]NAME[>=THRESHOLD], e.g. probs=ctc>=0.95")
    threshold = None
    if match["threshold"] is not None:
        try:
            threshold = float(match["threshold"])
        except ValueError:
            raise UsageError(f"--metric {text!r}: the threshold must be a number") from None
        if not math.isfinite(threshold):
            raise UsageError(f"--metric {text!r}: the threshold must be finite")
    return MetricRequest(match["metric"].strip(), match["output"].strip() if match["output"] else None, threshold)


def is_user_function(name: str) -> bool:
    """``file.py:function`` or ``package.module:function``."""
    return is_reference(name)


def user_function_metric(reference: str) -> MetricSpec:
    """A metric from a user's function ``fn(reference, candidate, feed) -> float`` (higher is better).

    The figure is the mean of the per-feed values weighted by the feed's rows. The module is imported only
    when the metric is asked for, never at ``--help`` time.
    """
    function = load_function(reference)

    def create(info: OutputInfo) -> Metric:
        return _MeanOfFunction(function)

    return MetricSpec(reference, f"user metric {reference}", 0.0, create, plugin="user")


class _MeanOfFunction:
    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.total = 0.0
        self.weight = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, feed: Mapping[str, np.ndarray]) -> None:
        try:
            value = float(self.function(reference, candidate, feed))
        except Exception as exc:
            raise UsageError(f"metric {self.function.__name__!r} raised {type(exc).__name__}: {exc}") from exc
        rows = reference.shape[0] if reference.ndim else 1
        self.total += value * rows
        self.weight += rows

    def value(self) -> float:
        return self.total / self.weight if self.weight else float("nan")


def attention_mask(feed: Mapping[str, np.ndarray], batch: int, length: int) -> np.ndarray | None:
    """The feed's attention mask as bool [batch, length] when one fits an output's two leading dims, else None.

    Positions it masks out (padding) are not compared: a model's outputs there are whatever padding gives.
    """
    for name, array in feed.items():
        if "mask" in name.lower() and array.ndim == 2 and array.shape == (batch, length) and array.dtype.kind in "biu":
            return array.astype(bool)
    return None


#: CTC's blank class, 0 in PaddleOCR, ddddocr and torch's CTCLoss default.
CTC_BLANK = 0


def ctc_decode(scores: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of [batch, steps, classes]: arg-max per step, repeats collapsed, blanks removed."""
    import numpy as np  # on use: importing the host stays light

    best = scores.argmax(axis=-1)
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(row[k].tolist()) for row, k in zip(best, keep)]


class MetricRegistry:
    """Every metric the loaded plugins registered, in registration order (which is detection priority)."""

    def __init__(self, specs: list[MetricSpec]) -> None:
        self.specs = {spec.name: spec for spec in specs}

    @classmethod
    def from_plugins(cls, pm: Any) -> MetricRegistry:
        specs: list[MetricSpec] = []

        def register(spec: MetricSpec) -> None:
            if any(s.name == spec.name for s in specs):
                raise UsageError(f"two plugins register the metric {spec.name!r}")
            specs.append(spec)

        pm.hook.onnxopt_register_metrics(register=register)
        return cls(specs)

    def get(self, name: str) -> MetricSpec:
        if is_user_function(name):
            return user_function_metric(name)
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none installed"
            raise UsageError(f"unknown metric {name!r} (metrics: {known}; or file.py:function)")
        return spec

    def check(self, requests: list[MetricRequest]) -> None:
        """Fail early, before any work, on a metric name no plugin knows."""
        for request in requests:
            if request.metric not in (NO_METRIC, AUTO):
                self.get(request.metric)

    def detect(self, info: OutputInfo) -> MetricSpec | None:
        """The first metric that claims this output for the default verdict."""
        return next((spec for spec in self.specs.values() if spec.detect(info)), None)
