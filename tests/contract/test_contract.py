"""Every registered pass through the contract checks of checks.py, one test id per pass (and model).

The passes are those a Session registers when the tests are collected: the built-in plugins, the example
third-party plugin (examples/strip-metadata-plugin, loaded with ``-p``) and any other installed plugin; no pass
is named here but in SUBGRAPH_BUGS. Each runs at its defaults. A pass ``onnxopt auto`` searches only on
request (it trains) is marked slow; a pass that says which onnxopt extra to install is skipped without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import pytest

from onnxopt.errors import OnnxoptError
from onnxopt.passes import PassSpec
from onnxopt.session import Session

from . import checks

PLUGINS = checks.third_party_plugins()
SESSION = Session(PLUGINS)
SPECS = list(SESSION.passes)
#: Small real models of the kinds passes rewrite: Gemm MLP (opset 13), Conv + BatchNormalization CNN (13),
#: MatMul / LayerNormalization / Softmax encoder block (17), MatMul / Gemm blocks with 1024-value weights and
#: foldable constants (17); each has a calibration split.
MODELS = ("iris_mlp", "digits_cnn", "tiny_transformer", "contract_plain")
MISSING_EXTRA = re.compile(r"install \S*onnxopt\[")
#: Known failures, by pass, with why; strict: a fix makes the test fail until its line here goes.
SUBGRAPH_BUGS: dict[str, str] = {}


def _marks(spec: PassSpec, bugs: Mapping[str, str] = MappingProxyType({})) -> list[pytest.MarkDecorator]:
    slow = [pytest.mark.slow] if checks.is_slow(spec) else []
    return slow + ([pytest.mark.xfail(strict=True, reason=bugs[spec.name])] if spec.name in bugs else [])


def _each_pass(bugs: Mapping[str, str] = MappingProxyType({})) -> list:
    return [pytest.param(spec, id=spec.name, marks=_marks(spec, bugs)) for spec in SPECS]


EACH_PASS_AND_MODEL = [
    pytest.param(spec, model, id=f"{spec.name}-{model}", marks=_marks(spec)) for spec in SPECS for model in MODELS
]


@contextmanager
def extra_or_skip() -> Iterator[None]:
    """Skip when the pass says an optional onnxopt extra is missing (e.g. a training backend)."""
    try:
        yield
    except (AssertionError, OnnxoptError) as exc:
        if MISSING_EXTRA.search(str(exc)):
            pytest.skip(f"an optional extra is missing: {exc}")
        raise


@pytest.fixture(scope="module")
def listed() -> dict[str, dict]:
    return checks.listing(PLUGINS, [checks.EXAMPLE_PLUGIN])


def test_the_suite_covers_a_third_party_pass_and_no_broken_one() -> None:
    plugins = {spec.plugin for spec in SPECS}
    assert plugins & {"strip-metadata", checks.EXAMPLE_MODULE}, plugins  # its entry point when installed, else -p
    assert "faulty_plugins" not in plugins


@pytest.mark.parametrize("spec", _each_pass())
def test_options_parse_and_defaults_build(spec: PassSpec, listed: dict[str, dict]) -> None:
    checks.check_options(spec, listed.get(spec.name))


@pytest.mark.parametrize(("spec", "model"), EACH_PASS_AND_MODEL)
def test_optimize_writes_a_model_onnxruntime_runs(spec: PassSpec, model: str, tmp_path: Path) -> None:
    with extra_or_skip():
        checks.check_optimize(spec, checks.FIXTURES / f"{model}.onnx", tmp_path / "out.onnx", PLUGINS)


def _run(spec: PassSpec, name: str) -> checks.Run:
    with extra_or_skip():
        return checks.run_in_memory(SESSION, spec, checks.FIXTURES / f"{name}.onnx")


@pytest.mark.parametrize("spec", _each_pass())
def test_input_kept_as_declared_and_some_model_changed(spec: PassSpec) -> None:
    """The pass's flags hold on every model; and it changes one, or the checks proved nothing of its rewrites
    (then give the contract a model it rewrites)."""
    changed = []
    for name in MODELS:
        run = _run(spec, name)
        checks.check_input(spec.name, run)
        changed += [name] if run.modified else []
    assert changed, f"{spec.name!r} at its defaults changed none of {', '.join(MODELS)}"


@pytest.mark.parametrize("spec", _each_pass(SUBGRAPH_BUGS))
def test_subgraphs_handled(spec: PassSpec) -> None:
    plain = _run(spec, "contract_plain")
    branched = checks.run_or_refusal(SESSION, spec, checks.FIXTURES / "contract_subgraphs.onnx")
    if isinstance(branched, checks.Run):
        checks.check_input(spec.name, branched)
    checks.check_subgraphs(spec, plain, branched)
