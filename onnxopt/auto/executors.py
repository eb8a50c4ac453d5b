"""Where trials run: a ``concurrent.futures.Executor``, chosen by name.

``process`` is a :class:`~concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method (a
forked child would inherit the search process's onnxruntime and database threads); a trial that crashes
its worker costs that trial, not the search. ``ray`` runs each trial as a Ray task through the same
``submit`` interface, for a search that outgrows one machine: ``ray.init()`` joins the cluster named by
``RAY_ADDRESS`` or starts a local one. Workers never touch the study; the search process alone asks and
tells, so no shared database is needed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from onnxopt.errors import UsageError

EXECUTORS = ("process", "ray")


class RayExecutor(Executor):
    """``submit`` runs ``fn(*args)`` as a Ray task and returns its ObjectRef as a concurrent.futures Future."""

    def __init__(self, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'onnxopt[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        self._remote: dict[Callable[..., Any], Any] = {}
        self.workers = workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=0)(fn)
        return remote.remote(*args, **kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(kind: str, workers: int) -> Executor:
    """An executor running at most ``workers`` trials at once (Ray: the search keeps ``workers`` in flight)."""
    if kind == "process":
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    if kind == "ray":
        return RayExecutor(workers)
    raise UsageError(f"unknown executor {kind!r} (choose from {', '.join(EXECUTORS)})")
