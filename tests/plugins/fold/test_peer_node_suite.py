"""fold against onnx's own backend node tests (onnx 1.22.0: 1765 tests), run in onnxruntime.

For every node test whose ORIGINAL model onnxruntime passes (outputs match the shipped ones at the suite's
own tolerance, rtol 1e-3 / atol 1e-5), the model is folded (``onnxopt.load`` -> ``apply_passes(["fold"])``
-> ``onnxopt.save``) and run again on the same inputs. Outcomes: ok; regression (outputs no longer match,
or onnxruntime cannot load / run the folded model); crash (load, fold or save raised). Known skips, each
with its reason, are in ``peer_known_skips.toml``. Any other regression or crash fails the test.

A second test makes every input of every node test a constant: fold must then leave nothing but constants
in at least ``CONSTANT_FOLDED_FLOOR`` of them, and never change an output.

Marked ``peer``: deselected by default, run by CI (``pytest -m "slow or peer"``). The suite is fetched
(``pip download``, cached under ``$ONNXOPT_CACHE`` or ``~/.cache/onnxopt``) only inside the test, never at
collection. Cases run in 2 worker processes (``ONNXOPT_PEER_WORKERS`` to change), so a crash or hang in
onnxruntime or fold fails one case, not the run. One case by hand: ``python tests/node_suite.py NAME``.
"""

from __future__ import annotations

import os
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

import node_suite
import pytest

KNOWN_SKIPS = Path(__file__).with_name("peer_known_skips.toml")
CASE_TIMEOUT_S = 300.0


def load_known_skips(path: Path = KNOWN_SKIPS) -> dict[str, str]:
    """``{test name: reason}`` from the ``[skips]`` table; a missing or empty reason is an error."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    unknown = sorted(set(data) - {"skips"})
    if unknown:
        raise ValueError(f"{path.name}: unknown key(s) {', '.join(unknown)}; skips go in the [skips] table")
    skips = data.get("skips", {})
    bad = [name for name, reason in skips.items() if not isinstance(reason, str) or not reason.strip()]
    if bad:
        raise ValueError(f"{path.name}: a known skip needs a reason: {', '.join(sorted(bad))}")
    return {name: reason.strip() for name, reason in skips.items()}


def test_known_skips_have_reasons():
    """Cheap, in the default run: the skip list parses and every entry names a node test and says why."""
    skips = load_known_skips()
    with open(KNOWN_SKIPS, "rb") as f:
        assert skips.keys() == tomllib.load(f).get("skips", {}).keys()  # none dropped (the list may be empty)
    assert all(name.startswith("test_") and reason for name, reason in skips.items()), skips


def test_known_skips_without_reason_are_refused(tmp_path):
    path = tmp_path / "skips.toml"
    path.write_text('[skips]\ntest_a = "onnxruntime is nondeterministic here"\ntest_b = ""\n')
    with pytest.raises(ValueError, match="test_b"):
        load_known_skips(path)


def test_comparison_follows_the_suite_tolerance():
    import numpy as np

    a = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    assert node_suite.mismatch(a, a * (1 + 5e-4)) is None  # within rtol 1e-3, NaN where NaN
    assert node_suite.mismatch(a, a * 1.01) is not None
    assert node_suite.mismatch(a, np.array([1.0, 2.0, 3.0], dtype=np.float32)) is not None  # NaN moved
    assert node_suite.mismatch(a, a.astype(np.float64)) is not None  # dtype
    assert node_suite.mismatch([a, a], [a]) is not None and node_suite.mismatch([a], [a]) is None  # sequences
    assert node_suite.mismatch(None, None) is None and node_suite.mismatch(None, a) is not None  # optionals


def _summary(results: list[node_suite.CaseResult], skipped: int, total: int, seconds: float) -> str:
    counts = Counter(r.outcome for r in results)
    compared = counts["ok"] + counts["regression"] + counts["crash"]
    reduced = sum(r.nodes_after < r.nodes_before for r in results if r.outcome in ("ok", "regression"))
    grown = sum(r.nodes_after > r.nodes_before for r in results if r.outcome in ("ok", "regression"))
    random = sum(r.outcome == "not-run" and r.reason.startswith("random output") for r in results)
    fold_total = sum(r.fold_seconds for r in results)
    slowest = max(results, key=lambda r: r.fold_seconds, default=None)
    rows = [
        ("node tests (onnx 1.22.0)", total),
        ("not run by onnxruntime", counts["not-run"]),
        ("compared", compared),
        ("ok", counts["ok"]),
        ("regressions", counts["regression"]),
        ("crashes", counts["crash"]),
        ("known skips", skipped),
        ("nodes reduced by fold", reduced),
    ]
    width = max(len(label) for label, _ in rows)
    lines = ["", "peer suite: fold on onnx's backend node tests (onnxruntime, rtol 1e-3, atol 1e-5)"]
    lines += [f"  {label:<{width}}  {value:>5}" for label, value in rows]
    notes = [f"{random} of the not-run have random outputs"]
    if grown:
        notes.append(f"fold added nodes in {grown}")
    lines.append(f"  ({'; '.join(notes)})")
    if slowest is not None:
        lines.append(
            f"  wall time {seconds:.0f} s; fold itself {fold_total:.1f} s in all, slowest {slowest.name} "
            f"{slowest.fold_seconds:.2f} s"
        )
    return "\n".join(lines)


@pytest.mark.peer
def test_fold_keeps_node_test_outputs(capsys):
    skips = load_known_skips()
    folder = node_suite.node_tests_dir()
    names = node_suite.node_test_names(folder)
    stale = sorted(set(skips) - set(names))
    assert not stale, f"peer_known_skips.toml names tests the suite does not have: {', '.join(stale)}"

    todo = [folder / name for name in names if name not in skips]
    workers = int(os.environ.get("ONNXOPT_PEER_WORKERS", "2"))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxopt-peer-") as workdir:
        results = node_suite.run_cases(todo, Path(workdir), workers=workers, timeout=CASE_TIMEOUT_S)
    seconds = time.perf_counter() - start

    summary = _summary(results, len(skips), len(names), seconds)
    with capsys.disabled():  # shown in CI's log without -s
        print(summary, flush=True)

    failures = [r for r in results if r.outcome in ("regression", "crash")]
    lines = [f"  {r.outcome:<10} {r.name}: {r.reason[:240]}" for r in failures]
    assert not failures, (
        f"{len(failures)} node test(s) broken by fold (reproduce one: python tests/node_suite.py NAME):\n"
        + "\n".join(lines)
        + "\n"
        + summary
    )


#: fold folded 1569 of 1649 node tests with constant inputs to constants (onnxsim 1390; bench/fold_node_suite.py).
CONSTANT_FOLDED_FLOOR = 1500


@pytest.mark.peer
def test_fold_evaluates_node_tests_with_constant_inputs(capsys):
    """With every input a constant, fold leaves nothing but constants in nearly every test, and breaks none."""
    folder = node_suite.node_tests_dir()
    todo = [folder / name for name in node_suite.node_test_names(folder)]
    workers = int(os.environ.get("ONNXOPT_PEER_WORKERS", "2"))
    with tempfile.TemporaryDirectory(prefix="onnxopt-peer-constant-") as workdir:
        results = node_suite.run_cases(
            todo, Path(workdir), workers=workers, timeout=CASE_TIMEOUT_S, mode="constant:onnxopt"
        )
    rows = {r.name: r.tools["onnxopt"] for r in results if r.outcome == "compared"}
    folded = sum(not row["left"] and not row["error"] for row in rows.values())
    with capsys.disabled():
        print(f"\nfold with constant inputs: {folded} of {len(rows)} node tests folded to constants", flush=True)
    bad = [
        f"{name}: {row['broken'] or row['error']}"[:240] for name, row in rows.items() if row["broken"] or row["error"]
    ]
    crashed = [f"{r.name}: {r.reason}" for r in results if r.outcome == "crash"]
    assert not bad and not crashed, "\n".join(bad + crashed)
    assert folded >= CONSTANT_FOLDED_FLOOR


def test_known_skips_parse_to_names_and_stripped_reasons(tmp_path):
    path = tmp_path / "skips.toml"
    path.write_text('[skips]\ntest_a = " onnxruntime differs here "\ntest_b = "fold is exact, the file is not"\n')
    assert load_known_skips(path) == {"test_a": "onnxruntime differs here", "test_b": "fold is exact, the file is not"}
    path.write_text('[skip]\ntest_a = "a typo in the table name"\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_known_skips(path)
