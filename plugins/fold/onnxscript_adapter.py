"""The one module of the plugins that touches onnxscript's private parts
(tests/plugins/fold/test_fold_imports.py holds it so).

Used: ``onnxscript.optimizer._constant_folding``, the module of onnxscript's constant folder, and two of its
private functions, replaced by no-ops while :func:`linear_folder` is active. Why: they make onnxscript 0.7.2's
folder quadratic in a chain of folds (figures: bench/README.md, section fold_scaling.py), and onnxscript has
no option to turn them off:

- ``_record_contributing_values``: on every folded value it records the names of all values it came from, a set
  copied, sorted and printed at each fold (fold never reads that record);
- ``_clear_unused_initializers``: after each fold it asks every input for its uses, a copy of the whole use list
  (one constant read by every Add: quadratic), to drop initializers left unused; fold's ``remove_unused`` step
  does that once afterwards.

On another onnxscript release: a function that is gone or renamed is not patched, and a module that moved is not
patched at all; fold still folds the same way through the public ``onnxscript.optimizer.fold_constants_ir``, only
maybe slower on long chains. tests/plugins/fold/test_fold_imports.py says which of the two pieces the installed release
lacks.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

#: The private module and the functions of it that :func:`linear_folder` replaces, with their stand-ins.
FOLDER_MODULE = "onnxscript.optimizer._constant_folding"
QUADRATIC_STEPS = {
    "_record_contributing_values": lambda node, replacement: None,
    "_clear_unused_initializers": lambda values: None,
}


@contextlib.contextmanager
def linear_folder() -> Iterator[None]:
    """onnxscript's constant folder without its two steps that are quadratic in a chain of folds."""
    from unittest import mock

    try:
        module = importlib.import_module(FOLDER_MODULE)
    except ImportError:  # another onnxscript layout: fold still works, maybe slower
        module = None
    with contextlib.ExitStack() as stack:
        for name, stand_in in QUADRATIC_STEPS.items():
            if module is not None and hasattr(module, name):
                stack.enter_context(mock.patch.object(module, name, stand_in))
        yield
