"""Pass options as the host declares them: ranges on the fields, checked both sides, and older spellings
(``PassSpec.replaces``) that route to the pass that replaced a mode."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from onnxopt import PassOptions, PassSpec, UsageError, option
from onnxopt.passes import PassRegistry


@dataclass(frozen=True)
class _Options(PassOptions):
    share: float = option(0.5, "a fraction", ge=0.0, lt=1.0)
    rounds: int = option(3, "at least one", ge=1)
    name: str = option("", "no range")


def _spec(name: str = "p", **extra: object) -> PassSpec:
    return PassSpec(name, "test pass", create=lambda o, c: None, options=_Options, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "ok"), [
    ({"share": "0"}, True), ({"share": "0.999"}, True), ({"share": "1"}, False),
    ({"share": "-0.01"}, False), ({"rounds": "1"}, True), ({"rounds": "0"}, False),
])  # fmt: skip
def test_declared_ranges_hold_on_both_sides(raw, ok):
    if ok:
        _spec().parse_options(raw)
    else:
        with pytest.raises(UsageError, match=r"pass 'p': (share|rounds) must be"):
            _spec().parse_options(raw)


def test_ranges_hold_when_options_are_built_directly_and_show_in_help():
    with pytest.raises(ValueError, match="share must be >= 0, < 1, got 1"):
        _Options(share=1.0)
    helps = {info.name: info.help for info in _spec().option_fields()}
    assert helps == {"share": "a fraction (>= 0, < 1)", "rounds": "at least one (>= 1)", "name": "no range"}


def test_an_unknown_bound_is_a_plugin_authors_error():
    with pytest.raises(TypeError, match="unknown bound"):
        option(1, "x", min=0)


def test_an_old_spelling_routes_to_the_pass_that_replaced_the_mode(caplog):
    registry = PassRegistry({"p": _spec(), "p-fast": _spec("p-fast", replaces=(("p", {"name": "fast"}),))})
    routed = registry.configure("p", {"name": "FAST", "rounds": "2"})
    assert routed.spec.name == "p-fast" and routed.options.rounds == 2 and routed.options.name == ""
    assert "is now the pass 'p-fast'" in caplog.text
    assert registry.configure("p", {"name": "slow"}).spec.name == "p"
    assert registry.configure("p").spec.name == "p"
