"""Plugins that misbehave on purpose, loaded with ``-p faulty_plugins`` (tests/ on PYTHONPATH).

Each pass breaks the model in one way the host must catch: it raises, returns something that is not a
PassResult, returns a graph onnx's checker rejects, returns a graph onnxruntime cannot load, or changes
the outputs beyond any gate. ``wrap_runs`` records every pass run through a wrapper hook.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

import onnxopt


class _Pass(ir.passes.InPlacePass):
    def __init__(self, options: object, context: onnxopt.RunContext, change: Callable[[ir.Model], object]) -> None:
        super().__init__()
        self.change = change

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = self.change(model)
        return result if result is not None else ir.passes.PassResult(model, modified=True)


def _raise(model: ir.Model) -> None:
    raise RuntimeError("deliberate failure inside the pass")


def _append_after_output(model: ir.Model, op_type: str, domain: str = "") -> None:
    """Route the first output through one more node."""
    graph = model.graph
    old = graph.outputs[0]
    node = ir.node(op_type, inputs=[old], domain=domain)
    graph.append(node)
    new = node.outputs[0]
    new.name, old.name = old.name, old.name + "_pre"
    new.type, new.shape = old.type, old.shape
    graph.outputs[0] = new


def _checker_rejects(model: ir.Model) -> None:
    _append_after_output(model, "NoSuchOperator")


def _onnxruntime_rejects(model: ir.Model) -> None:
    model.opset_imports["com.example.missing"] = 1
    _append_after_output(model, "CustomOp", domain="com.example.missing")


def _negate(model: ir.Model) -> None:
    _append_after_output(model, "Neg")


def _not_a_result(model: ir.Model) -> object:
    return "not a PassResult"


FAULTS = {
    "fault-raise": _raise,
    "fault-checker": _checker_rejects,
    "fault-ort": _onnxruntime_rejects,
    "fault-negate": _negate,
    "fault-result": _not_a_result,
}


@onnxopt.hookimpl
def onnxopt_register_passes(register: Callable[[onnxopt.PassSpec], None]) -> None:
    for name, change in FAULTS.items():
        register(
            onnxopt.PassSpec(
                name=name,
                summary=f"breaks the model ({change.__name__})",
                create=lambda options, context, change=change: _Pass(options, context, change),
            )
        )


RUNS: list[str] = []


@onnxopt.hookimpl(wrapper=True)
def onnxopt_run_pass(spec: onnxopt.PassSpec, options: object, model: ir.Model, context: onnxopt.RunContext):
    RUNS.append(spec.name)
    result = yield
    context.stats["wrapped"] = True
    return result
