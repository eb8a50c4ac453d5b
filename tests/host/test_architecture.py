"""The layering DESIGN.md section 5c states, held by the source itself (tests/import_graph.py reads it).

The host knows no pass and imports no plugin; nothing in onnxopt/ imports in a loop; a plugin imports only the
``onnxopt`` façade and the public graph helpers; a plugin's own hooks and commands live with it (the distill
command is gone with ``-p no:distill``); and a pass run from inside another goes through the hook like any.
"""

from __future__ import annotations

import numpy as np
import pytest
from import_graph import HOST, PLUGINS, ROOT, edges, loops, plugin_imports_of_host
from paths import TESTS

import onnxopt

#: What a plugin may import from the host: the façade and the graph helpers documented as public.
PLUGIN_SURFACE = {HOST, f"{HOST}.graph"}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return edges()


def test_no_import_loop_in_the_host(graph):
    assert loops(graph) == []


def test_the_loop_finder_sees_a_loop():
    assert loops({"onnxopt.a": {"onnxopt.b"}, "onnxopt.b": {"onnxopt.a"}, "onnxopt.c": set()}) == [
        ["onnxopt.a", "onnxopt.b"]
    ]


def test_the_host_imports_no_plugin(graph):
    assert {name: deps for name, deps in graph.items() if name.split(".")[0] == HOST
            if any(d.split(".")[0] == PLUGINS for d in deps)} == {}  # fmt: skip


def test_plugins_import_only_the_facade(graph):
    beyond = {
        name: sorted(deps - PLUGIN_SURFACE)
        for name, deps in plugin_imports_of_host(graph).items()
        if deps - PLUGIN_SURFACE
    }
    assert beyond == {}


def test_every_name_a_plugin_takes_from_the_facade_exists():
    """``from onnxopt import X`` in a plugin resolves: the façade's lazy table covers it."""
    import ast

    taken = {alias.name for path in (ROOT / "plugins").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.ImportFrom) and node.module == HOST and not node.level
             for alias in node.names}  # fmt: skip
    assert "RunContext" in taken
    assert {name for name in taken - {"graph"} if not hasattr(onnxopt, name)} == set()


def test_the_host_names_no_pass():
    """No host module holds a built-in pass's name as a string, docstrings and comments aside."""
    import ast

    names = {"fold", "prune", "quantize", "cluster", "distill"}
    found = []
    for path in (ROOT / "onnxopt").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and ast.get_docstring(node)}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_blocking_distill_removes_its_command_and_auto_flag(run_cli):
    assert "distill" in run_cli("--help").stdout
    assert "--distill" in run_cli("auto", "--help").stdout
    blocked = run_cli("-p", "no:distill", "distill", "t.onnx", "--data", "d.npz")
    assert blocked.returncode == 2 and "invalid choice: 'distill'" in blocked.stderr
    assert "--distill" not in run_cli("-p", "no:distill", "auto", "--help").stdout
    listed = run_cli("plugins", "-p", "no:distill")  # the torch / keras backends load without the hook's owner
    assert listed.returncode == 0 and "distill-torch" in listed.stdout


def test_a_third_party_declares_its_own_hook_and_command(run_cli):
    greeted = run_cli("-p", "greeting_plugin", "greet", "world", cwd=TESTS)
    assert greeted.returncode == 0 and greeted.stdout.strip() == "hello, world"
    assert "greet" not in run_cli("--help", cwd=TESTS).stdout


def test_a_nested_pass_runs_through_the_hook(tmp_path, fixtures_dir):
    """quantize-dynamic runs fold first through context.run_pass: a wrapper plugin sees both, and fold's counters land
    under quantize's own stats, not over them."""
    import faulty_plugins

    faulty_plugins.RUNS.clear()
    report = onnxopt.optimize(fixtures_dir / "digits_cnn.onnx", tmp_path / "q.onnx", passes=["quantize-dynamic"],
                              plugins=["faulty_plugins"], latency_runs=0)  # fmt: skip
    assert report.exit_code == 0
    assert faulty_plugins.RUNS == ["quantize-dynamic", "fold"]
    stats = report.steps[0].stats
    assert stats["wrapped"] is True and stats["folded_first"]["batchnorm_fused"] == 2
    assert "batchnorm_fused" not in stats


def test_context_run_pass_keeps_the_callers_stats(tmp_path, fixtures_dir):
    from onnxopt.session import Session

    session = Session()
    model = onnxopt.load(fixtures_dir / "digits_cnn.onnx")
    with session.context() as context:
        context.stats["mine"] = 1
        result = context.run_pass("fold", model.clone())
        assert context.stats == {"mine": 1} and result.modified and result.stats["batchnorm_fused"] == 2
        with pytest.raises(onnxopt.UsageError, match="unknown pass 'nope'"):
            context.run_pass("nope", model)
    assert np.isfinite(onnxopt.count_parameters(result.model))
