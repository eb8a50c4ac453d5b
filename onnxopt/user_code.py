"""A user's own code named on the command line: ``file.py:function`` or ``package.module:function``.

Task metrics (``--metric``), data loaders (``--data loader.py:load``) and distillation students name functions
this way. The module is imported only when the function is needed, never while the command line is parsed; a
script may import its neighbours (its folder is on ``sys.path`` while it loads); a file that is missing, a
module that does not exist, an import that raises (``SystemExit`` included) and a name that is not a function
are one-line errors of the caller's kind (a UsageError for a metric, a DataError for a loader).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from onnxopt.errors import OnnxoptError, UsageError

REFERENCE = re.compile(r"^(?P<target>.+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)$")


def is_reference(text: str) -> bool:
    """Whether ``text`` names a function as ``file.py:function`` or ``module:function``."""
    return REFERENCE.match(text) is not None


def _raised(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _script(path: Path, error: type[OnnxoptError]) -> ModuleType:
    if not path.is_file():
        raise error(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"onnxopt_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    folder = str(path.parent.resolve())
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except (Exception, SystemExit) as exc:
        raise error(f"{path}: raised {_raised(exc)} while importing") from None
    finally:
        sys.path.remove(folder)
    return module


def _module(name: str, error: type[OnnxoptError]) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise error(f"{name}: no such module (not a .py path either)") from None
        raise error(f"{name}: raised {_raised(exc)} while importing") from None
    except (Exception, SystemExit) as exc:
        raise error(f"{name}: raised {_raised(exc)} while importing") from None


def load_function(reference: str, *, error: type[OnnxoptError] = UsageError) -> Callable[..., Any]:
    """Import and return the function ``reference`` names; every failure is one ``error``."""
    match = REFERENCE.match(reference)
    if match is None:
        raise error(f"{reference!r}: expected file.py:function or module:function")
    target, name = match["target"], match["function"]
    module = _script(Path(target).expanduser(), error) if target.endswith(".py") else _module(target, error)
    function = getattr(module, name, None)
    if not callable(function):
        raise error(f"{target}: has no function {name!r}")
    return function
