"""The optuna study on disk: created or resumed, tied to one search, its trial outcomes stored inside.

The study lives in ``study.db`` (optuna's RDB storage on SQLite) in the search folder, so an
interrupted search continues where it stopped: finished trials are kept, trials that were running when
the search died are marked failed and queued again with the same options. The study remembers what it
searched (model, data, objective, gates, space, seed); resuming with any of these changed is refused
rather than mixing two searches in one frontier. Each finished trial's :class:`TrialOutcome` is stored as
a user attribute, so the report can always be rebuilt from the study file alone.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from onnxopt.auto.trial import TrialOutcome
from onnxopt.errors import UsageError

STUDY_FILE = "study.db"
STUDY_NAME = "onnxopt-auto"
OUTCOME = "outcome"
CONSTRAINT = "gates"  # the constraint: how far the gates were missed


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError("onnxopt auto needs optuna: pip install 'onnxopt[auto]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def fingerprint(source: str) -> str:
    """Content hash of a file, listing of a folder, or the text itself (``synthetic:64``)."""
    path = Path(source)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    if path.is_dir():
        return json.dumps(sorted((p.name, p.stat().st_size) for p in path.iterdir()))
    return source


@contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """One search per folder at a time: a second one would see the first one's trials as interrupted."""
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder}: another onnxopt auto search is running in this folder") from None
        yield


def open_study(folder: Path, identity: dict[str, Any], *, seed: int, startup_trials: int) -> tuple[Any, bool]:
    """The study in ``folder`` (created if new) and whether it was resumed."""
    optuna = import_optuna()
    storage = f"sqlite:///{folder.absolute() / STUDY_FILE}"
    # trials that miss the gates carry a positive constraint (Trial.set_constraint): TPE ranks them below
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, constant_liar=True)
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="minimize", sampler=sampler, load_if_exists=True
    )
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        return study, False
    changed = sorted(key for key in {*stored, *identity} if stored.get(key) != identity.get(key))
    if changed:
        raise UsageError(
            f"{folder}: holds a search with a different {', '.join(changed)}; "
            "give another --workdir or delete that folder to start afresh"
        )
    return study, True


def requeue_interrupted(study: Any) -> list[int]:
    """Trials left running by a search that died: marked failed, their options queued again; their numbers."""
    optuna = import_optuna()
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for frozen in stale:
        study.enqueue_trial(frozen.params, skip_if_exists=False)
        study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
    return [t.number for t in stale]


def outcome_attr(outcome: TrialOutcome) -> dict[str, Any]:
    return dataclasses.asdict(outcome)


def outcomes(study: Any) -> list[TrialOutcome]:
    """Every trial that finished with a recorded outcome, by number; these use up ``--max-trials``.

    Interrupted trials do not count: they were queued again, even one killed after its outcome was recorded but
    before the study was told (it is left running, then marked failed without the error a failed trial records).
    """
    optuna = import_optuna()
    found = []
    for trial in study.get_trials(deepcopy=False):
        data = trial.user_attrs.get(OUTCOME)
        if data is None:
            continue
        outcome = TrialOutcome(**data)
        if trial.state == optuna.trial.TrialState.COMPLETE or (
            trial.state == optuna.trial.TrialState.FAIL and outcome.error
        ):
            found.append(outcome)
    return sorted(found, key=lambda o: o.number)


def atomic_write_text(path: Path, text: str) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
