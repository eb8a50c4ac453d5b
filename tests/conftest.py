"""Shared fixtures for onnxopt's tests.

- ``fixtures_dir``: the folder of committed fixture models and data (``fixtures/`` at the repository root).
- ``run_cli(*args, cwd=None)``: runs ``python -m onnxopt.cli ARGS`` in a subprocess, as a user would, and
  returns the :class:`subprocess.CompletedProcess` (text mode, stdout and stderr captured).
- ``copy_model(name, tmp_path)``: copies ``fixtures/<name>`` (``.onnx`` added if missing) into ``tmp_path``
  and returns the new path, for tests that must not touch the committed files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # tests/: paths, faulty_plugins, node_suite, ... importable from any depth

from paths import FIXTURES as FIXTURES_DIR  # noqa: E402


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Path of the repository's ``fixtures/`` folder."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, cwd=None)`` runs the onnxopt CLI in a subprocess and returns the CompletedProcess."""

    def run(*args: str | os.PathLike, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "onnxopt.cli", *map(str, args)],
            cwd=cwd,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def copy_model(fixtures_dir: Path) -> Callable[[str, Path], Path]:
    """``copy_model(name, tmp_path)`` copies a fixture model into ``tmp_path`` and returns its new path."""

    def copy(name: str, tmp_path: Path) -> Path:
        source = fixtures_dir / (name if name.endswith(".onnx") else name + ".onnx")
        return Path(shutil.copy2(source, Path(tmp_path) / source.name))

    return copy
