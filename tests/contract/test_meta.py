"""The contract checks catch what they are for: each runs on a pass broken on purpose and must fail.

tests/faulty_plugins.py's passes raise, return no PassResult, or write models onnx's checker or onnxruntime
rejects; liars.py's passes lie about their flags or options, or handle subgraphs wrongly. A check that let one
of them through would let the same bug in a real plugin through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxopt
from onnxopt.passes import PassSpec
from onnxopt.session import Session

from . import checks

FAULTY = Session(["faulty_plugins"])
LIARS = Session(["contract.liars"])
IRIS = checks.FIXTURES / "iris_mlp.onnx"
PLAIN = checks.FIXTURES / "contract_plain.onnx"
SUBGRAPHS = checks.FIXTURES / "contract_subgraphs.onnx"


def _broken(name: str) -> tuple[Session, PassSpec]:
    session = FAULTY if name in FAULTY.passes else LIARS
    return session, session.passes.get(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [("fault-raise", "raised RuntimeError"), ("fault-result", "raised TypeError"),
     ("fault-checker", "(?i)rejected by the onnx checker"), ("fault-ort", "onnxruntime cannot load")],
)  # fmt: skip
def test_the_optimize_check_fails_a_pass_the_host_rolls_back(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.check_optimize(FAULTY.passes.get(name), IRIS, tmp_path / "out.onnx", ["faulty_plugins"])


@pytest.mark.parametrize(
    ("name", "message"),
    [("fault-checker", "onnx checker"), ("fault-ort", "onnxruntime cannot"), ("liar-writes-nan", "is not finite")],
)  # fmt: skip
def test_the_model_check_fails_what_the_checker_or_onnxruntime_rejects(name: str, message: str) -> None:
    session, spec = _broken(name)
    run = checks.run_in_memory(session, spec, PLAIN)
    with pytest.raises(AssertionError, match=message):
        checks.run_model(run.output, checks.feeds(PLAIN))


@pytest.mark.parametrize(
    ("name", "message"),
    [("liar-changes-input", "declares changes_input=False but changed its input"),
     ("liar-says-unmodified", "said modified=False but changed it")],
)  # fmt: skip
def test_the_input_check_fails_a_pass_whose_flags_lie(name: str, message: str) -> None:
    run = checks.run_in_memory(*_broken(name), PLAIN)
    with pytest.raises(AssertionError, match=message):
        checks.check_input(name, run)


@pytest.mark.parametrize(
    ("name", "message"),
    [("liar-main-graph-only", "left If.else_branch, If.then_branch, Loop.body as they were"),
     ("liar-drops-captures", "on the If / Loop model: rejected by the onnx checker"),
     ("liar-scales-subgraphs", "keeps the plain twin's outputs but changes the If / Loop model's"),
     ("liar-refuses-subgraphs", "handles subgraphs yet refused the If / Loop model: this pass does not"),
     ("fault-checker", "rejected by the onnx checker")],
)  # fmt: skip
def test_the_subgraph_check_fails_a_pass_that_mishandles_subgraphs(name: str, message: str) -> None:
    session, spec = _broken(name)
    plain, branched = checks.run_in_memory(session, spec, PLAIN), checks.run_or_refusal(session, spec, SUBGRAPHS)
    with pytest.raises(AssertionError, match=message):
        checks.check_subgraphs(spec, plain, branched)


def test_a_pass_that_does_not_handle_subgraphs_may_refuse_them() -> None:
    spec = LIARS.passes.get("honest-refuses-subgraphs")
    refusal = checks.run_or_refusal(LIARS, spec, SUBGRAPHS)
    assert isinstance(refusal, onnxopt.ModelError)
    checks.check_subgraphs(spec, checks.run_in_memory(LIARS, spec, PLAIN), refusal)


@pytest.fixture(scope="module")
def liars_listed() -> dict[str, dict]:
    return checks.listing(["contract.liars"], [checks.ROOT / "tests"])


@pytest.mark.parametrize(
    ("name", "message"),
    [("liar-no-help", "option 'level' has no help"), ("liar-comma-default", "pattern=a,b' does not parse"),
     ("liar-reads-back-as-none", "label=none' parses to .*label=None"),
     ("liar-out-of-range", "its defaults do not build: .*ratio must be <= 1")],
)  # fmt: skip
def test_the_options_check_fails_options_a_user_cannot_use(name: str, message: str, liars_listed: dict) -> None:
    with pytest.raises(AssertionError, match=message):
        checks.check_options(LIARS.passes.get(name), liars_listed.get(name))


def test_an_honest_pass_passes_every_check(tmp_path: Path) -> None:
    """The checks' other side: the example third-party pass, loaded as the liars are, fails none."""
    plugins = checks.third_party_plugins()
    session = Session(plugins)
    spec = session.passes.get("strip-metadata")
    checks.check_options(spec, checks.listing(plugins, [checks.EXAMPLE_PLUGIN]).get(spec.name))
    checks.check_optimize(spec, IRIS, tmp_path / "out.onnx", plugins)
    plain, branched = (checks.run_in_memory(session, spec, path) for path in (PLAIN, SUBGRAPHS))
    checks.check_input(spec.name, plain)
    checks.check_subgraphs(spec, plain, branched)
