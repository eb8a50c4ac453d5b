"""The source string every data source shares: ``PATH?key=value,key=value``, and the helpers around it.

The host hands a dataset plugin only ``shapes``, ``seed`` and ``batch_size``, so a source's own settings ride
in the string the user types (``--data 'pages/?preset=imagenet,size=640x640,samples=64'``). Parsed here once
for every source: each declares its keys with a parser, an unknown key is a one-line UsageError listing the
valid ones. Lists inside a value are separated by ``:`` (``mean=0.485:0.456:0.406``) since ``,`` separates
options. Written here: the format is onnxopt's own. The source hooks use this module to decide what they claim,
on every run, so it imports nothing heavy (no numpy, no onnx_ir); what reads the data is in :mod:`.stream` and
each source's reader.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from onnxopt import DataError, UsageError

Parser = Callable[[str], Any]


def split(source: str) -> tuple[str, dict[str, str]]:
    """``'dir/?a=1,b=x'`` -> ``('dir/', {'a': '1', 'b': 'x'})``; the raw values stay text."""
    path, sep, query = source.partition("?")
    raw: dict[str, str] = {}
    if not sep:
        return path, raw
    for item in query.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"{source!r}: option {item!r} is not key=value (options: PATH?key=value,key=value)")
        if key in raw:
            raise UsageError(f"{source!r}: option {key!r} given twice")
        raw[key] = value.strip()
    return path, raw


def parse(source: str, kind: str, raw: Mapping[str, str], parsers: Mapping[str, Parser]) -> dict[str, Any]:
    """Typed values of the options in ``raw``; an unknown key or a bad value is a UsageError."""
    unknown = sorted(set(raw) - set(parsers))
    if unknown:
        raise UsageError(
            f"{source!r}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {kind} "
            + (f"(valid: {', '.join(sorted(parsers))})" if parsers else "(it takes none)")
        )
    values = {}
    for key, text in raw.items():
        try:
            values[key] = parsers[key](text)
        except ValueError as exc:
            raise UsageError(f"{source!r}: {key}={text!r}: {exc}") from None
    return values


def number(text: str) -> float:
    """A float, or a fraction such as ``1/255``."""
    top, sep, bottom = text.partition("/")
    try:
        return float(top) / float(bottom) if sep else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError("expected a number such as 0.5 or 1/255") from None


def numbers(text: str) -> tuple[float, ...]:
    """One number, or one per channel separated by ``:``."""
    return tuple(number(part) for part in text.split(":"))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ValueError("expected a positive integer")
    return int(text)


def size(text: str) -> tuple[int, int]:
    """``640`` (square) or ``HxW`` as in the tensor's dims, e.g. ``480x640``."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("expected N or HxW with positive integers, e.g. 640 or 480x640")
    height, width = (int(parts[0]), int(parts[-1]))
    return height, width


def choice(*allowed: str) -> Parser:
    def parse_choice(text: str) -> str:
        if text.lower() not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text.lower()

    return parse_choice


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    return path


SAMPLES: dict[str, Parser] = {"samples": positive_int}  # every source takes a cap on its samples


def files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under ``folder`` (recursively, hidden folders skipped) whose suffix is one of ``suffixes``, sorted."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(root, name) for name in names if Path(name).suffix.lower() in suffixes)
    return sorted(found)


def claimed_files(path: Path, suffixes: Sequence[str]) -> list[Path]:
    """The files a file-or-folder source reads at ``path``: the file itself when its suffix is one of ``suffixes``,
    else the folder's such files (recursively) unless .npy / .npz files at its top make it the host's; [] when
    there are none."""
    if path.is_file():
        return [path] if path.suffix.lower() in suffixes else []
    if not path.is_dir() or any(path.glob("*.np[yz]")):
        return []
    return files(path, suffixes)


def open_claimed(
    source: str, suffixes: Sequence[str], opener: Callable[..., Any], model: Any, options: dict[str, Any]
) -> Any:
    """A file-or-folder source's hook: None unless :func:`claimed_files` finds files, else ``opener(path, found,
    source, raw, model, options)``, where ``raw`` are the source string's options for the opener to :func:`parse`."""
    text, raw = split(source)
    path = Path(text).expanduser()
    found = claimed_files(path, suffixes)
    if not found:
        return None
    return opener(path, found, source, raw, model, options)


def require(module: str, package: str, purpose: str) -> ModuleType:
    """Import an optional dependency of the ``data`` extra, or a one-line DataError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{purpose} needs {package}: pip install 'onnxopt[data]'") from None
