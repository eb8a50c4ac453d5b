"""Plugin loading: entry points, -p, -p no:, the autoload switch, hook validation, and a real third-party install."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from paths import TESTS

from onnxopt.errors import UsageError
from onnxopt.passes import PassRegistry
from onnxopt.plugins import DISABLE_AUTOLOAD_ENV, get_plugin_manager, plugin_infos

EXAMPLE = TESTS.parent / "examples" / "strip-metadata-plugin"


def _names(pm) -> set[str]:
    return {info.name for info in plugin_infos(pm)}


def test_builtin_plugins_arrive_through_the_entry_point_group():
    pm = get_plugin_manager(autoload=True)
    fold = next(info for info in plugin_infos(pm) if info.name == "fold")
    assert fold.distribution == "onnxopt" and fold.version
    assert fold.hooks == ("onnxopt_register_passes",)
    assert PassRegistry.from_plugins(pm).get("fold").plugin == "fold"


def test_block_with_no_prefix():
    pm = get_plugin_manager(["no:fold"], autoload=True)
    assert "fold" not in _names(pm)
    assert "fold" not in PassRegistry.from_plugins(pm)


def test_disable_autoload_env_keeps_only_requested_plugins(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    assert _names(get_plugin_manager()) == {"onnxopt.host"}
    assert "fold" in _names(get_plugin_manager(["fold"]))  # an entry-point name still loads with -p


def test_p_loads_a_module_by_import_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    pm = get_plugin_manager(["faulty_plugins"])
    assert {"fault-raise", "fold"} <= {spec.name for spec in PassRegistry.from_plugins(pm)}


def test_unknown_module_is_a_usage_error():
    with pytest.raises(UsageError, match="no such plugin or module"):
        get_plugin_manager(["no_such_module_anywhere"])


def test_misspelled_hookimpl_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "typo_plugin.py").write_text(
        "import onnxopt\n@onnxopt.hookimpl\ndef onnxopt_register_pases(register):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="onnxopt_register_pases"):
        get_plugin_manager(["typo_plugin"])


def test_two_plugins_registering_one_name_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "dup_plugin.py").write_text(
        "import onnxopt\n"
        "@onnxopt.hookimpl\n"
        "def onnxopt_register_passes(register):\n"
        "    register(onnxopt.PassSpec(name='fold', summary='again', create=None))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="registered twice"):
        PassRegistry.from_plugins(get_plugin_manager(["dup_plugin"]))


def test_example_plugin_installed_as_a_distribution_runs_through_the_cli(tmp_path, fixtures_dir):
    """pip-installs examples/strip-metadata-plugin into a folder and runs its pass via the entry point."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-m", "onnxopt.cli"]
    plugins = subprocess.run([*cli, "plugins"], env=env, capture_output=True, text=True, check=True).stdout
    assert "strip-metadata" in plugins and "onnxopt-strip-metadata" in plugins
    out = tmp_path / "out.onnx"
    run = subprocess.run(
        [*cli, "optimize", str(fixtures_dir / "iris_mlp.onnx"), "-o", str(out),
         "--pass", "strip-metadata:keep_producer=false", "--data", str(fixtures_dir / "iris_mlp_val.npz")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^ +cleared +\S", run.stdout, re.M)  # the pass's stats, in the indented table
    import onnx

    model = onnx.load(out)
    assert model.doc_string == "" and model.producer_name == ""
    assert onnx.load(fixtures_dir / "iris_mlp.onnx").doc_string != ""
