"""The README's first command, run as a new user would: a fresh venv, a clean copy of the repository.

Marked slow (it installs onnxopt and its dependencies from the package index into an empty venv);
.ci/run runs it after the default suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from paths import ROOT


def readme_commands() -> list[str]:
    """The commands of the README's first code block, which must be its two set-up commands."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None and text.index(block.group(0)) < text.index("\n## ")
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "onnxopt optimize" in commands[0] and "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly the README's test command


def _clean_copy(target: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.mark.slow
def test_readme_main_command_in_a_fresh_venv(tmp_path):
    repo = _clean_copy(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    run = subprocess.run(
        readme_commands()[0], shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "OK" in run.stdout and re.search(r"^ +batchnorm_fused +2$", run.stdout, re.M)
    out = repo / "digits_cnn.opt.onnx"
    onnx.checker.check_model(onnx.load(out))
    help_run = subprocess.run([str(venv / "bin" / "onnxopt"), "passes"], env=env, capture_output=True, text=True)
    assert "fold" in help_run.stdout  # the built-in plugin arrived through the installed entry point
