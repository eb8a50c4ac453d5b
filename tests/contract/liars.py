"""A plugin whose passes break the pass contract on purpose, one way each, for test_meta.py (``-p contract.liars``).

tests/faulty_plugins.py's passes write broken models; these write models onnx's checker may well accept but
lie about what they did (their flags, their options) or handle subgraphs wrongly, which only the contract
checks (checks.py) can catch. Each is a plugin pass as a third party writes one, on onnxopt's public bases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

import onnxopt


def _clear_doc_strings(model: ir.Model, graph: ir.Graph | None = None) -> None:
    """Clear the doc string of every node of ``graph`` (default: of every graph of the model)."""
    nodes = graph if graph is not None else ir.traversal.RecursiveGraphIterator(model.graph)
    for node in nodes:
        node.doc_string = None


class ChangesItsInput(onnxopt.FunctionalPluginPass):
    """Declares itself functional (changes_input=False), yet clears the input's doc strings before cloning."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        _clear_doc_strings(model)
        return ir.passes.PassResult(model.clone(), modified=True)


class SaysUnmodified(onnxopt.InPlacePluginPass):
    """Changes the model and reports modified=False (the host would throw the change away)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        _clear_doc_strings(model)
        return ir.passes.PassResult(model, modified=False)


class MainGraphOnly(onnxopt.InPlacePluginPass):
    """Says it handles subgraphs (the PassSpec default) but clears doc strings in the main graph only."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        _clear_doc_strings(model, model.graph)
        return ir.passes.PassResult(model, modified=True)


class DropsCaptures(onnxopt.InPlacePluginPass):
    """Removes the initializers no main-graph node reads, forgetting that a subgraph may read them."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        unused = [name for name, value in model.graph.initializers.items()
                  if not any(node.graph is model.graph for node, _ in value.uses())]  # fmt: skip
        for name in unused:
            model.graph.initializers.pop(name)
        return ir.passes.PassResult(model, modified=bool(unused))


class ScalesSubgraphWeights(onnxopt.InPlacePluginPass):
    """Leaves the main graph alone (outputs kept there) but doubles every subgraph's own initializers."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for graph in model.graphs():
            if graph is model.graph:
                continue
            for value in graph.initializers.values():
                value.const_value = ir.tensor(value.const_value.numpy() * 2)
                modified = True
        return ir.passes.PassResult(model, modified=modified)


class WritesNaN(onnxopt.InPlacePluginPass):
    """A valid model onnxruntime runs, whose float weights are all NaN."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for value in model.graph.initializers.values():
            if value.const_value.dtype == ir.DataType.FLOAT:
                value.const_value = ir.tensor(value.const_value.numpy() * float("nan"))
        return ir.passes.PassResult(model, modified=True)


class RefusesSubgraphs(onnxopt.InPlacePluginPass):
    """Refuses a model with subgraphs with a clear error (fine only if its PassSpec says it does not handle them)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if any(graph is not model.graph for graph in model.graphs()):
            raise onnxopt.ModelError("this pass does not rewrite If / Loop / Scan bodies")
        return ir.passes.PassResult(model, modified=False)


@dataclass(frozen=True)
class NoHelpOptions(onnxopt.PassOptions):
    level: int = onnxopt.option(1, "")


@dataclass(frozen=True)
class CommaDefaultOptions(onnxopt.PassOptions):
    pattern: str = onnxopt.option("a,b", "a default no --pass text can spell: the comma splits options")


@dataclass(frozen=True)
class ReadsBackAsNoneOptions(onnxopt.PassOptions):
    label: str | None = onnxopt.option("none", "the string 'none', which typed back is no label at all")


@dataclass(frozen=True)
class OutOfRangeOptions(onnxopt.PassOptions):
    ratio: float = onnxopt.option(2.0, "a default outside its own declared range", le=1)


@onnxopt.hookimpl
def onnxopt_register_passes(register: Callable[[onnxopt.PassSpec], None]) -> None:
    passes = {
        "liar-changes-input": ChangesItsInput,
        "liar-says-unmodified": SaysUnmodified,
        "liar-main-graph-only": MainGraphOnly,
        "liar-drops-captures": DropsCaptures,
        "liar-scales-subgraphs": ScalesSubgraphWeights,
        "liar-writes-nan": WritesNaN,
    }
    for name, create in passes.items():
        register(onnxopt.PassSpec(name=name, summary=create.__doc__.splitlines()[0], create=create))
    for name, handles in (("liar-refuses-subgraphs", True), ("honest-refuses-subgraphs", False)):
        register(onnxopt.PassSpec(name=name, summary="refuses subgraphs", create=RefusesSubgraphs,
                                  handles_subgraphs=handles))  # fmt: skip
    for name, options in (("liar-no-help", NoHelpOptions), ("liar-comma-default", CommaDefaultOptions),
                          ("liar-reads-back-as-none", ReadsBackAsNoneOptions),
                          ("liar-out-of-range", OutOfRangeOptions)):  # fmt: skip
        summary = f"options: {options.__name__}"
        register(onnxopt.PassSpec(name=name, summary=summary, create=MainGraphOnly, options=options))
