"""The whole plugin contract of the host: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, registered through the
``onnxopt`` entry-point group (as the built-in plugins are) or loaded with ``-p MODULE``. The host calls
these hooks; it knows no optimization itself. Argument names matter: pluggy passes arguments by name,
and a plugin may accept any subset of them. A plugin may declare hooks of its own (:func:`onnxopt_addhooks`,
as the distill plugin declares its training-backend hook) and add subcommands (:func:`onnxopt_register_commands`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxopt.context import RunContext
    from onnxopt.data import Dataset
    from onnxopt.metrics import MetricSpec
    from onnxopt.passes import PassSpec
    from onnxopt.report import Report
    from onnxopt.validation import Check

PROJECT = "onnxopt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def onnxopt_addhooks(add: Callable[[Any], None]) -> None:
    """Declare hooks of this plugin's own: call ``add(module)`` with a module (or class) of functions marked
    with :data:`hookspec`, as pytest's ``pytest_addhooks``.

    Called when the plugin registers. Other plugins implement those hooks with ``hookimpl(optionalhook=True)``,
    so they still load when the declaring plugin is blocked (``-p no:NAME``); the declaring plugin calls them
    through ``context.hook``.
    """


@hookspec
def onnxopt_register_commands(add_command: Callable[..., Any]) -> None:
    """Add subcommands to the ``onnxopt`` command line, as llm's ``register_commands``.

    ``parser = add_command(name, help=..., handler=fn, gates=False)`` returns an ``argparse`` parser to add the
    command's own arguments to; the host adds ``-p``, ``--json``, ``--quiet``, ``--debug`` and ``--verbose`` (and
    the gate flags with ``gates=True``, parsed into ``args.gates``). ``fn(args)`` runs the command and returns
    its exit code; an :class:`onnxopt.errors.OnnxoptError` it raises becomes one line and that error's exit code.
    A blocked plugin's commands are gone. Import heavy modules inside ``fn``: every plugin loads on every command.
    """


@hookspec
def onnxopt_register_passes(register: Callable[[PassSpec], None]) -> None:
    """Call ``register(PassSpec(...))`` once for every pass this plugin provides.

    The host records which plugin registered each pass, so errors and reports can name it.
    Two plugins registering the same pass name is an error.
    """


@hookspec(firstresult=True)
def onnxopt_load_model(path: str, options: dict[str, Any]) -> ir.Model | None:
    """Load the model at ``path`` into an ``onnx_ir.Model``, or return None if this plugin can't.

    ONNX files are loaded by the host itself (it tries last); a plugin claims other formats, e.g. a Keras
    file converted with tf2onnx. ``options`` carries loader settings such as ``{"opset": 17}``.
    Raise :class:`onnxopt.errors.ModelError` for a file the plugin recognises but cannot load.
    """


@hookspec(firstresult=True)
def onnxopt_open_dataset(source: str, model: ir.Model, options: dict[str, Any]) -> Dataset | None:
    """Open the dataset named by ``source`` for ``model``, or return None to let another plugin try.

    The host handles ``.npz`` files, folders of ``.npy`` / ``.npz`` files and ``synthetic:N``.
    ``options`` carries ``shapes`` (input name -> shape for symbolic dims), ``seed`` and ``batch_size`` (None: the
    data decides, see :data:`onnxopt.data.FEED_INPUT_BYTES`);
    :func:`onnxopt.data.from_arrays` builds a Dataset from arrays a plugin has read.
    """


@hookspec(firstresult=True)
def onnxopt_run_pass(spec: PassSpec, options: Any, model: ir.Model, context: RunContext) -> Any:
    """Run one pass on ``model`` and return its ``onnx_ir.passes.PassResult``.

    The host's own implementation runs the pass; plugins add ``wrapper=True`` implementations around it
    to time, log, trace or veto passes.
    """


@hookspec
def onnxopt_validate(reference: str, candidate: str, data: Dataset | None, context: RunContext) -> list[Check] | None:
    """Return extra validation checks comparing the candidate model file with the reference file.

    ``data`` is None when the run has no data to feed (only loading and the signature were compared).
    Each returned :class:`onnxopt.validation.Check` is gated like the built-in ones: a failing check fails
    the validation.
    """


@hookspec
def onnxopt_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    """Call ``register(MetricSpec(...))`` for every task metric this plugin provides.

    A metric judges one output by its task (top-1, CTC sequences, mask IoU, pooled embeddings, ...): it streams
    each feed's reference and candidate arrays and gives one figure, gated as ``figure >= threshold``. Users ask
    for it by name (``--metric [OUTPUT=]NAME[>=T]``); a spec whose ``detect`` claims an output makes it that
    output's default judge in place of the generic cosine gates. Registration order is detection priority.
    """


@hookspec
def onnxopt_report(report: Report, context: RunContext) -> None:
    """Receive the finished report, e.g. to write it to another format or send it somewhere."""
