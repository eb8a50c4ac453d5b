"""Base classes for a plugin's pass: built by the host from the parsed options and the run context.

``PassSpec(create=MyPass, ...)`` with ``class MyPass(onnxopt.InPlacePluginPass)`` needs no ``__init__``:
``self.options``, ``self.context`` and ``self.stats`` (the counters the report shows) are there. Kept apart from
:mod:`onnxopt.passes` because it imports onnx-ir, which ``onnxopt passes`` and ``--help`` do without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import onnx_ir as ir

if TYPE_CHECKING:
    from onnxopt.context import RunContext


class _PluginPass:
    def __init__(self, options: Any, context: RunContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    @property
    def stats(self) -> dict[str, Any]:
        """This pass's counters for the report (the host gives each run of a pass a fresh dict)."""
        return self.context.stats


class InPlacePluginPass(_PluginPass, ir.passes.InPlacePass):
    """A pass that changes the model it is given and returns it."""


class FunctionalPluginPass(_PluginPass, ir.passes.FunctionalPass):
    """A pass that leaves the model it is given alone and returns a new one."""
