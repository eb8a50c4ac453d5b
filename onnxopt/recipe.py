"""Recipes: the passes of a run with their options, the data, and the validation gates.

One format serves the CLI, a TOML file and the Python API, so a run a person tried on the command line is
the same run a pipeline repeats from its recipe::

    data = "calib.npz"            # or a folder, or "synthetic:32": what passes calibrate / train on
    val = "val.npz"               # what the verdict is judged on (default: data, else derived synthetic inputs)
    metrics = ["ctc>=0.95"]       # task metrics as gates, [OUTPUT=]NAME[>=T] (default: detected per output)
    on_failure = "rollback"       # or "stop"
    seed = 0
    [shapes]                      # shapes of synthetic test data (the written model keeps its dims)
    input = "1x3x224x224"
    [gates]
    min_cosine = 0.999
    [[passes]]
    name = "fold"
    [[passes]]
    name = "quantize"
    mode = "static"               # every other key is an option of the pass
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onnxopt.data import parse_shape
from onnxopt.errors import UsageError
from onnxopt.gates import Gates

OnFailure = Literal["rollback", "stop"]


@dataclass
class PassStep:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """A whole run's settings; see the module docstring for the TOML spelling."""

    passes: list[PassStep] = field(default_factory=list)
    data: str | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    batch_size: int | None = None  # rows per onnxruntime run; None: as many as fit the data's byte budget
    gates: Gates = field(default_factory=Gates)  # the user's; the default verdict fills in the rest
    val: str | None = None
    metrics: list[str] = field(default_factory=list)
    validate: bool = True  # False (--no-validate): nothing is compared and the run ends "not validated"
    default_gates: bool = True  # the default verdict (task metrics detected, generic cosine) where no gate is set
    on_failure: OnFailure = "rollback"
    seed: int = 0
    validate_each_pass: bool = True
    latency_runs: int | None = None  # None: DEFAULT_LATENCY_RUNS, or none when no kept pass can change latency
    threads: int = 0
    external_data: bool | None = None

    def __post_init__(self) -> None:
        check_settings(self)


#: Latency rounds of the written file's measurement when ``latency_runs`` is not given (at most: it stops early).
DEFAULT_LATENCY_RUNS = 20


#: Integer settings, the least value each takes, and what its least value means.
_INTEGER_SETTINGS = {
    "batch_size": (1, "rows per onnxruntime run"),
    "seed": (0, "numpy takes no negative seed"),
    "latency_runs": (0, "0 skips the latency measurement"),
    "threads": (0, "0 leaves the choice to onnxruntime"),
}


def check_settings(recipe: Recipe) -> None:
    """Refuse integer settings out of range, however the recipe was built (TOML, CLI flags, Python API).

    Called by every construction of a :class:`Recipe`, ``dataclasses.replace`` included.
    """
    for key, (least, meaning) in _INTEGER_SETTINGS.items():
        value = getattr(recipe, key)
        if value is None and key in ("batch_size", "latency_runs"):
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{key} must be an integer, got {value!r}")
        if value < least:
            raise UsageError(f"{key} must be at least {least} ({meaning}), got {value}")


PassArg = str | tuple[str, Mapping[str, Any]] | PassStep


def pass_steps(passes: Sequence[PassArg]) -> list[PassStep]:
    """Normalise the Python API's pass list: names, ``(name, options)`` pairs, or PassSteps."""
    steps = []
    for item in passes:
        if isinstance(item, PassStep):
            steps.append(item)
        elif isinstance(item, str):
            from onnxopt.passes import parse_pass_argument

            name, options = parse_pass_argument(item)
            steps.append(PassStep(name, dict(options)))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Mapping):
            steps.append(PassStep(item[0], dict(item[1])))
        else:
            raise UsageError(f"a pass is a name, a (name, options) pair or a PassStep, not {item!r}")
    return steps


def _shapes(value: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(value, Mapping):
        raise UsageError('recipe: [shapes] must map input names to shapes like "1x3x224x224"')
    return dict(parse_shape(f"{name}={shape}") for name, shape in value.items())


_TOP_LEVEL = {
    "passes", "data", "shapes", "batch_size", "gates", "on_failure", "seed",
    "validate_each_pass", "latency_runs", "threads", "external_data", "val", "metrics", "validate",
}  # fmt: skip


def recipe_from_mapping(values: Mapping[str, Any], *, origin: str = "recipe") -> Recipe:
    """Build a recipe from parsed TOML (or any mapping of the same shape)."""
    unknown = sorted(set(values) - _TOP_LEVEL)
    if unknown:
        raise UsageError(f"{origin}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(_TOP_LEVEL))})")
    recipe = Recipe()
    steps = []
    if not isinstance(values.get("passes", []), list):
        raise UsageError(f'{origin}: passes must be a list of tables, e.g. [[passes]] name = "fold"')
    for index, entry in enumerate(values.get("passes", [])):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise UsageError(f'{origin}: passes[{index}] needs a name, e.g. [[passes]] name = "fold"')
        options = {k: v for k, v in entry.items() if k != "name"}
        steps.append(PassStep(entry["name"], options))
    recipe.passes = steps
    if "gates" in values:
        if not isinstance(values["gates"], Mapping):
            raise UsageError(f"{origin}: [gates] must be a table")
        recipe.gates = Gates.from_mapping(dict(values["gates"]))
    if "shapes" in values:
        recipe.shapes = _shapes(values["shapes"])
    if "metrics" in values:
        if not isinstance(values["metrics"], list) or not all(isinstance(m, str) for m in values["metrics"]):
            raise UsageError(f'{origin}: metrics must be a list of strings like "ctc>=0.95"')
        recipe.metrics = list(values["metrics"])
    simple = {k: values[k] for k in _TOP_LEVEL - {"passes", "gates", "shapes", "metrics"} if k in values}
    expected = {"data": str, "val": str, "validate": bool, "batch_size": int, "on_failure": str, "seed": int,
                "validate_each_pass": bool, "latency_runs": int, "threads": int, "external_data": bool}  # fmt: skip
    for key, value in simple.items():
        if not isinstance(value, expected[key]) or (expected[key] is int and isinstance(value, bool)):
            raise UsageError(f"{origin}: {key} must be a {expected[key].__name__}, got {value!r}")
    if simple.get("on_failure", "rollback") not in ("rollback", "stop"):
        raise UsageError(f'{origin}: on_failure must be "rollback" or "stop", got {simple["on_failure"]!r}')
    try:
        return dataclasses.replace(recipe, **simple)
    except UsageError as exc:
        raise UsageError(f"{origin}: {exc}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read a TOML recipe; a missing file or bad TOML is a one-line UsageError."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a FIFO whose read would block forever
        raise UsageError(f"{path}: not a regular file")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read recipe ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    return recipe_from_mapping(values, origin=str(path))


def as_gates(gates: Gates | Mapping[str, Any] | None) -> Gates | None:
    """The Python API's gates (a :class:`Gates` or a mapping like ``{"min_cosine": 0.999}``), checked."""
    if gates is None or isinstance(gates, Gates):
        return gates
    return Gates.from_mapping(dict(gates))


def normal_shapes(shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """``{input: shape}`` with integer tuples, however the caller spelled the shapes."""
    return {name: tuple(int(d) for d in dims) for name, dims in (shapes or {}).items()}


def build_recipe(
    recipe: Recipe | str | Path | None = None,
    *,
    passes: Sequence[PassArg] = (),
    data: str | Path | None = None,
    gates: Gates | Mapping[str, Any] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    **settings: Any,
) -> Recipe:
    """A recipe file or object, with explicit arguments taking precedence (passes are appended)."""
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    recipe = dataclasses.replace(recipe) if recipe is not None else Recipe()
    recipe.passes = [*recipe.passes, *pass_steps(passes)]
    if data is not None:
        recipe.data = str(data)
    if settings.get("val") is not None:
        settings["val"] = str(settings["val"])
    if (extra := as_gates(gates)) is not None:
        recipe.gates = recipe.gates.merged(extra)
    if shapes:
        recipe.shapes = {**recipe.shapes, **normal_shapes(shapes)}
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"unknown setting(s) {', '.join(unknown)}")
    return dataclasses.replace(recipe, **{k: v for k, v in settings.items() if v is not None})
