"""The search's picture: every trial by size and quality, coloured by latency, with the frontier drawn.

matplotlib (the ``plot`` extra) is imported here only, with the non-interactive Agg backend, so a search
on a server without a display still writes its PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxopt.auto.frontier import measured, pareto, quality
from onnxopt.auto.trial import TrialOutcome
from onnxopt.errors import UsageError


def matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot_frontier(
    outcomes: Sequence[TrialOutcome],
    best: TrialOutcome | None,
    path: Path,
    *,
    title: str,
    budget: float | None,
    reference: float | None,
) -> Path:
    """Write the PNG; ``budget`` is the lowest acceptable quality, ``reference`` the original's."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("the Pareto plot needs matplotlib: pip install 'onnxopt[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = measured(outcomes)
    labelled = any(o.accuracy is not None for o in done)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    latencies = [o.latency_ratio if o.latency_ratio is not None else 1.0 for o in done]
    low, high = min(latencies, default=1.0), max(latencies, default=1.0)
    for passed, marker, label in ((True, "o", "meets budget"), (False, "X", "misses budget")):
        group = [(o, lat) for o, lat in zip(done, latencies) if o.passed == passed]
        if group:
            points = ax.scatter(
                [o.size_ratio for o, _ in group], [quality(o) for o, _ in group], c=[lat for _, lat in group],
                cmap="viridis", vmin=low, vmax=max(high, low + 1e-6), marker=marker, s=60, edgecolors="black",
                linewidths=0.5, label=label, zorder=3,
            )  # fmt: skip
    line = pareto(done, latency=False)
    if line:  # the best quality reachable at each size: a staircase carried on to the right edge
        right = max(1.0, *(o.size_ratio for o in done))
        xs, ys = [o.size_ratio for o in line] + [right], [quality(o) for o in line] + [quality(line[-1])]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.2, label="size / quality frontier", zorder=2)
    if budget is not None:
        ax.axhline(budget, color="tab:orange", linestyle="--", linewidth=1, label="budget")
    if reference is not None:
        ax.scatter([1.0], [reference], marker="s", s=70, color="white", edgecolors="black", label="original", zorder=3)
    if best is not None:
        ax.scatter([best.size_ratio], [quality(best)], marker="*", s=320, facecolors="none", edgecolors="tab:red",
                   linewidths=1.5, label=f"chosen (trial {best.number})", zorder=4)  # fmt: skip
    for o in pareto(done):  # the frontier with latency: the trials the printed table lists
        ax.annotate(str(o.number), (o.size_ratio, quality(o)), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if done:
        fig.colorbar(points, ax=ax, label="latency (x original)")
    ax.set_xlabel("size on disk (x original)")
    ax.set_ylabel("accuracy on the labels" if labelled else "worst output cosine vs original")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
