"""The hook the distill plugin declares (through ``onnxopt_addhooks``): training backends plug in here.

A backend plugin (torch and keras ship beside this module; a third party's works the same way) implements it
with ``@hookimpl(optionalhook=True)``, so it still loads when distill itself is blocked with ``-p no:distill``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onnxopt import hookspec

if TYPE_CHECKING:
    from .training import Trainer


@hookspec(firstresult=True)
def onnxopt_distill_trainer(backend: str, student: Any) -> Trainer | None:
    """Return a trainer that can retrain ``student`` on a teacher's outputs, or None to let another backend try.

    ``backend`` is the name the user asked for (``"torch"``, ``"keras"``, a third party's) or ``"auto"``;
    answer only your own name or ``"auto"``. ``student`` is an ``onnx_ir.Model`` (an ONNX student, e.g. a
    pruned teacher) or the framework model a user's ``module:function`` built; answer only what you can
    train. The trainer (:class:`onnxopt_plugins.distill.training.Trainer`) gets a ``TrainingJob``, trains,
    writes the student as ONNX to ``job.output`` with the teacher's input/output names and a dynamic batch
    dimension, and returns a ``TrainingResult``. Import heavy frameworks inside ``fit`` or after the checks,
    never at module import: every plugin module loads on every command.
    """
