"""Pass descriptors, typed pass options, and the registry the plugins fill.

A plugin describes each pass with a :class:`PassSpec`: a name, a one-line summary, an options dataclass
(a :class:`PassOptions`) whose fields carry defaults, help and valid ranges (``option(default, "help", ge=0)``),
and a factory that builds an
``onnx_ir.passes.PassBase`` from the parsed options and the run context. Options arrive as strings from
the CLI (``--pass prune:sparsity=0.5``) or typed from a TOML recipe; both are parsed against the field
types here, so a wrong name or value is a clear error before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from onnxopt.errors import OnnxoptError, PluginError, UsageError

logger = logging.getLogger("onnxopt")

if typing.TYPE_CHECKING:
    import onnx_ir as ir

    from onnxopt.context import RunContext
    from onnxopt.plugins import PluginManager


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}  # fmt: skip


def option(default: Any, help: str, **bounds: float) -> Any:  # noqa: A002 - "help" reads best at the call site
    """A pass option: a dataclass field with a default, a one-line help text, and optionally its valid range
    (``ge`` / ``gt`` / ``le`` / ``lt``, e.g. ``option(0.5, "...", ge=0, lt=1)``), checked by :class:`PassOptions`
    and shown by ``onnxopt passes``."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"option(): unknown bound(s) {', '.join(sorted(unknown))} (use ge, gt, le, lt)")
    metadata = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def range_text(bounds: Mapping[str, float]) -> str:
    """``>= 0, < 1``: a field's declared range in words, for help and errors."""
    return ", ".join(f"{_BOUNDS[kind][0]} {bound:g}" for kind, bound in bounds.items())


@dataclass(frozen=True)
class PassOptions:
    """Base of a pass's options dataclass: the ranges declared with :func:`option` are checked on construction.

    A subclass that checks more in its own ``__post_init__`` calls ``super().__post_init__()`` first.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            bounds = f.metadata.get("bounds") or {}
            value = getattr(self, f.name)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not all(_BOUNDS[kind][1](value, bound) for kind, bound in bounds.items()):
                raise ValueError(f"{f.name} must be {range_text(bounds)}, got {value:g}")


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that takes none."""


When = tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True)
class SearchDim:
    """One option ``onnxopt auto`` searches: categorical ``values``, or a ``low``..``high`` range with ``step``.

    With neither, the values come from the option's type (a ``Literal`` or a ``bool``). ``when`` limits the
    dimension to trials where other options of the same pass took one of the given values (e.g. the calibration
    method only for ``mode=static``); ``key`` tells apart one option's ranges under different conditions.
    """

    option: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    when: When = ()
    key: str = ""

    @property
    def param(self) -> str:
        return self.key or self.option


@dataclass(frozen=True)
class SearchHint:
    """How ``onnxopt auto`` may use a pass: the useful region of its options (the registry knows only their
    valid region), where it goes in a searched pipeline, and whether every candidate or only a request gets it.

    ``stage`` orders the passes of a candidate: simplify (0), retrain a narrower model (10), remove weights (20),
    lower precision (40), share values (45: after quantizing, so int8 weights are what gets stored in 4 bits).
    """

    dims: tuple[SearchDim, ...] = ()
    stage: int = 50
    always: bool = False  # in every candidate (fold)
    on_request: bool = False  # searched only when asked for (distill trains, which takes long)
    #: Option overrides a user would try first ({} = the defaults); each is enqueued as a first trial of this pass
    #: alone, so a search is never judged against a baseline it did not try (quantize: static, dynamic).
    baselines: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class PassSpec:
    """Everything the host needs to know about one pass."""

    name: str
    summary: str
    create: Callable[[Any, RunContext], ir.passes.PassBase]
    options: type = NoOptions
    needs_data: bool | Callable[[Any], bool] = False  # or a function of the parsed options
    #: False (or a function of the options saying so): the pass changes weight values only — same graph, dtypes
    #: and kernels — so a run whose kept passes all say so does not time the written file unless asked.
    changes_latency: bool | Callable[[Any], bool] = True
    handles_subgraphs: bool = True
    #: True (or a function of the options saying so): the pass retrains the model (distillation), so its result is
    #: a different model that should agree with the original — judged by the retrained default verdict
    #: (:data:`onnxopt.gates.RETRAINED`), and the passes before it are not judged on their own.
    retrains: bool | Callable[[Any], bool] = False
    search: SearchHint | None = None  # None: ``onnxopt auto`` never tries this pass
    #: Older spellings this pass answers, as (pass name, options that select it): ``(("quantize", {"mode":
    #: "dynamic"}),)`` makes ``quantize:mode=dynamic`` run this pass with the rest of its options.
    replaces: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    plugin: str = ""

    def requires_data(self, options: Any) -> bool:
        """Whether this pass, with these options, needs the run's dataset (e.g. static quantization)."""
        return self.needs_data(options) if callable(self.needs_data) else bool(self.needs_data)

    def may_change_latency(self, options: Any) -> bool:
        """Whether onnxruntime may run this pass's result at another speed than its input."""
        return self.changes_latency(options) if callable(self.changes_latency) else bool(self.changes_latency)

    def may_retrain(self, options: Any) -> bool:
        """Whether this pass, with these options, hands back a retrained model (see ``retrains``)."""
        return self.retrains(options) if callable(self.retrains) else bool(self.retrains)

    def option_fields(self) -> list[OptionInfo]:
        """The pass's options with their resolved types, defaults and help."""
        hints = typing.get_type_hints(self.options)
        infos = []
        for f in dataclasses.fields(self.options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            bounds = f.metadata.get("bounds") or {}
            help_text = f.metadata.get("help", "") + (f" ({range_text(bounds)})" if bounds else "")
            infos.append(OptionInfo(f.name, hints[f.name], default, help_text))
        return infos

    def parse_options(self, raw: Mapping[str, Any]) -> Any:
        """Build the options object from CLI strings or recipe values; unknown names and bad values raise."""
        fields = {info.name: info for info in self.option_fields()}
        values = {}
        for key, value in raw.items():
            info = fields.get(key)
            if info is None:
                valid = ", ".join(fields) or "none"
                raise UsageError(f"pass {self.name!r} has no option {key!r} (valid options: {valid})")
            try:
                values[key] = coerce(value, info.type)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"pass {self.name!r}: option {key}={value!r}: {exc}") from exc
        try:
            return self.options(**values)
        except (TypeError, ValueError) as exc:  # an options class may validate in __post_init__
            raise UsageError(f"pass {self.name!r}: {exc}") from exc


@dataclass(frozen=True)
class OptionInfo:
    name: str
    type: Any
    default: Any
    help: str

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def type_name(tp: Any) -> str:
    """A short, readable spelling of an option type for help output."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(value: Any, tp: Any) -> Any:
    """Convert ``value`` (a CLI string or a TOML value) to the option type ``tp``, or raise ValueError."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, choices))}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(tp) or (str,)
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(";") if v]
        return origin(coerce(item, item_type) for item in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("expected an integer")
        return int(value)
    if tp is float:  # finite: an option's range check (``x > 0``, ``x <= 1``) lets inf and nan through
        if isinstance(value, bool):
            raise ValueError("expected a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    raise TypeError(f"unsupported option type {tp!r}")


def parse_pass_argument(text: str) -> tuple[str, dict[str, str]]:
    """Split the CLI short form ``NAME[:key=value,...]`` into the name and its raw options.

    List values are written with ``;`` between items: ``exclude=conv1;conv2``.
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"--pass {text!r}: missing pass name")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--pass {text!r}: expected key=value, got {item!r}")
        options[key.strip()] = value.strip()
    return name, options


@dataclass(frozen=True)
class ConfiguredPass:
    """A pass with its parsed options: one step of a run."""

    spec: PassSpec
    options: Any

    @property
    def label(self) -> str:
        changed = {
            info.name: getattr(self.options, info.name)
            for info in self.spec.option_fields()
            if getattr(self.options, info.name) != info.default
        }
        return self.spec.name + (":" + ",".join(f"{k}={v}" for k, v in changed.items()) if changed else "")


class PassRegistry:
    """Every pass the loaded plugins registered, by name."""

    def __init__(self, specs: Mapping[str, PassSpec]) -> None:
        self._specs = dict(specs)

    @classmethod
    def from_plugins(cls, pm: PluginManager) -> PassRegistry:
        """Ask every plugin to register its passes, remembering which plugin registered which."""
        specs: dict[str, PassSpec] = {}
        for impl in pm.hook.onnxopt_register_passes.get_hookimpls():

            def register(spec: PassSpec, _plugin: str = impl.plugin_name) -> None:
                if not isinstance(spec, PassSpec):
                    raise UsageError(f"plugin {_plugin!r} registered {spec!r}, which is not a PassSpec")
                if spec.name in specs:
                    raise UsageError(
                        f"pass {spec.name!r} is registered twice: by {specs[spec.name].plugin!r} and {_plugin!r}"
                    )
                specs[spec.name] = dataclasses.replace(spec, plugin=_plugin)

            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except OnnxoptError:
                raise
            except Exception as exc:
                raise PluginError(impl.plugin_name, f"registering passes failed: {type(exc).__name__}: {exc}") from exc
        return cls(specs)

    def __iter__(self) -> Iterator[PassSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> PassSpec:
        try:
            return self._specs[name]
        except KeyError:
            valid = ", ".join(sorted(self._specs)) or "none installed"
            raise UsageError(f"unknown pass {name!r} (installed passes: {valid})") from None

    def configure(self, name: str, raw_options: Mapping[str, Any] | None = None) -> ConfiguredPass:
        raw = dict(raw_options or {})
        successor = self._successor(name, raw)
        if successor is not None:
            spec, selector = successor
            logger.warning("onnxopt: '%s' with %s is now the pass '%s'; the old spelling goes in a later release",
                           name, ",".join(f"{k}={v}" for k, v in selector.items()), spec.name)  # fmt: skip
            return ConfiguredPass(spec, spec.parse_options({k: v for k, v in raw.items() if k not in selector}))
        spec = self.get(name)
        return ConfiguredPass(spec, spec.parse_options(raw))

    def _successor(self, name: str, raw: Mapping[str, Any]) -> tuple[PassSpec, Mapping[str, Any]] | None:
        """The pass that replaced ``name`` with these options (``PassSpec.replaces``), if one did."""
        for spec in self._specs.values():
            for old_name, selector in spec.replaces:
                if (
                    old_name == name
                    and selector
                    and all(k in raw and str(raw[k]).lower() == str(v).lower() for k, v in selector.items())
                ):
                    return spec, selector
        return None
