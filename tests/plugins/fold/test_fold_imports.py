"""How fold is put together: onnxscript's private parts only through one adapter, a light package import, and
the option ranges declared on FoldOptions."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from paths import ROOT

from onnxopt import UsageError

PLUGINS = ROOT / "plugins"
ADAPTER = PLUGINS / "fold" / "onnxscript_adapter.py"
_PRIVATE_PATH = re.compile(r"onnxscript(\.\w+)*\._\w*(\.\w+)*")


def private_onnxscript_uses(source: str) -> list[str]:
    """Private onnxscript modules or names a module's code reaches: imported (``from onnxscript.x._y import``,
    ``from onnxscript.x import _y``), read off an imported onnxscript name (``rules._fuse``) or named in a string
    (``importlib.import_module("onnxscript.x._y")``). Docstrings and comments may mention them."""
    found, onnxscript_names = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "onnxscript":
                    onnxscript_names.add(alias.asname or "onnxscript")
                    found += [alias.name] if any(p.startswith("_") for p in alias.name.split(".")) else []
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "onnxscript" and not node.level:
            onnxscript_names |= {alias.asname or alias.name for alias in node.names}
            if any(p.startswith("_") for p in node.module.split(".")):
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _PRIVATE_PATH.fullmatch(node.value):
            found.append(node.value)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in onnxscript_names:
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize(
    ("source", "private"),
    [
        ("from onnxscript.rewriter import _ir_utils", True),
        ("from onnxscript.rewriter.rules.common._matmul_add_to_gemm import MatMulAddToGemm", True),
        ("import onnxscript.optimizer._constant_folding as cf", True),
        ("import onnxscript.optimizer as o\no._constant_folding.FoldConstantsPass", True),
        ("import importlib\nimportlib.import_module('onnxscript.optimizer._constant_folding')", True),
        ("from onnxscript.rewriter.pattern import RewriteRule\nRewriteRule._replacement_pattern", True),
        ("from onnxscript.rewriter.pattern import RewriteRule", False),
        ("from onnxscript.optimizer import fold_constants_ir", False),
        ('"""onnxscript.optimizer._constant_folding is quadratic."""\nimport onnxscript', False),
        ("import onnx_ir as ir\nir._core", False),
    ],
)
def test_the_private_use_finder(source: str, private: bool) -> None:
    assert bool(private_onnxscript_uses(source)) is private


def test_only_the_adapter_uses_onnxscripts_private_parts() -> None:
    found = {str(path.relative_to(PLUGINS)): uses for path in sorted(PLUGINS.rglob("*.py")) if path != ADAPTER
             if (uses := private_onnxscript_uses(path.read_text()))}  # fmt: skip
    assert found == {}
    assert private_onnxscript_uses(ADAPTER.read_text())  # the finder does see the adapter's use


def test_the_installed_onnxscript_has_what_the_adapter_patches() -> None:
    """Not needed for fold to work (it folds the same without them), but without them long chains fold slowly."""
    import importlib

    from onnxopt_plugins.fold import onnxscript_adapter

    module = importlib.import_module(onnxscript_adapter.FOLDER_MODULE)
    assert [name for name in onnxscript_adapter.QUADRATIC_STEPS if not hasattr(module, name)] == []
    with onnxscript_adapter.linear_folder():
        assert all(getattr(module, name) is stand_in for name, stand_in in onnxscript_adapter.QUADRATIC_STEPS.items())
    assert all(getattr(module, name) is not stand_in for name, stand_in in onnxscript_adapter.QUADRATIC_STEPS.items())


def test_importing_fold_loads_no_heavy_library() -> None:
    """The CLI imports every plugin before it parses: fold's package must not load onnx_ir and the like."""
    heavy = ("numpy", "onnx", "onnx_ir", "onnxruntime", "onnxscript", "torch", "tensorflow")
    code = f"import sys, onnxopt_plugins.fold; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _fold_spec():
    from onnxopt.session import Session

    return Session().passes.get("fold")


@pytest.mark.parametrize(("option", "refused", "least"), [("max_rounds", "0", 1), ("max_growth_mib", "-0.5", 0.0)])
def test_fold_option_ranges(option: str, refused: str, least: float) -> None:
    spec = _fold_spec()
    with pytest.raises(UsageError, match=rf"pass 'fold': {option} must be >= {least:g}, got {refused}"):
        spec.parse_options({option: refused})
    assert getattr(spec.parse_options({option: str(least)}), option) == least
    assert f"(>= {least:g})" in {info.name: info.help for info in spec.option_fields()}[option]
