"""Start-up stays light: the CLI imports every plugin before it parses (plugins add commands), so a plugin's
entry-point module must not import numpy, onnx, onnx_ir, onnxruntime, torch or tensorflow; those load when a
pass runs, a dataset is read or a model converted. Checked in a fresh interpreter, where nothing is loaded yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

HEAVY = ("numpy", "onnx", "onnx_ir", "onnxruntime", "torch", "tensorflow")
#: The entry points of the distill, keras-loader, datasources and metrics plugins.
ENTRY_POINTS = ("distill", "distill-torch", "distill-keras", "keras-loader", "data-images", "data-text", "data-audio",
                "data-loader", "metrics")  # fmt: skip


def _heavy_after(code: str) -> list[str]:
    """The heavy modules loaded once ``code`` has run in a fresh interpreter."""
    report = f"\nimport json\nprint('HEAVY', json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", "import sys\n" + code + report], capture_output=True, text=True,
                            check=True)  # fmt: skip
    return json.loads(result.stdout.rpartition("HEAVY ")[2])


def test_entry_point_modules_import_nothing_heavy():
    modules = sorted(ep.value for ep in entry_points(group="onnxopt") if ep.name in ENTRY_POINTS)
    assert len(modules) == len(ENTRY_POINTS)
    assert _heavy_after("".join(f"import {module}\n" for module in modules)) == []


@pytest.mark.parametrize("argv", [["--help"], ["passes"], ["passes", "--json"], ["plugins"], ["plugins", "--json"]])
def test_commands_without_graph_work_import_nothing_heavy(argv):
    """``--help``, ``passes`` and ``plugins`` load every plugin (they add commands and passes) and still none of the
    heavy modules: their start-up is Python's and pluggy's, not onnx_ir's or onnxruntime's (issue 15)."""
    run = ("import contextlib, io, runpy\n"
           f"sys.argv = ['onnxopt', *{argv!r}]\nout = io.StringIO()\n"
           "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
           "    runpy.run_module('onnxopt.cli', run_name='__main__')\n"
           "assert out.getvalue().strip(), 'the command printed nothing'")  # fmt: skip
    assert _heavy_after(run) == []
