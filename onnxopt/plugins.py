"""The plugin manager: which plugins are loaded, from where, and in what order.

Built-in plugins and third-party ones arrive the same way, through the ``onnxopt`` entry-point group, so
the plugin API is proven by our own passes. As in pytest:

- every installed entry point is loaded unless ``ONNXOPT_DISABLE_PLUGIN_AUTOLOAD`` is set;
- ``-p NAME`` loads one more plugin: an entry-point name (even with autoload off) or an importable module;
- ``-p no:NAME`` blocks the plugin registered as NAME (an entry-point name or a module name).

The host's own defaults (loading ONNX files, reading datasets, running a pass) are a plugin too,
registered first and marked ``trylast`` so any installed plugin can override them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pluggy

from onnxopt import hookspecs
from onnxopt.errors import UsageError

ENTRY_POINT_GROUP = "onnxopt"
DISABLE_AUTOLOAD_ENV = "ONNXOPT_DISABLE_PLUGIN_AUTOLOAD"
HOST_PLUGIN_NAME = "onnxopt.host"


@dataclass(frozen=True)
class PluginInfo:
    """What ``onnxopt plugins`` shows about one loaded plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _split_requests(requests: Iterable[str]) -> tuple[list[str], list[str]]:
    wanted: list[str] = []
    blocked: list[str] = []
    for request in requests:
        request = request.strip()
        if not request:
            raise UsageError("-p needs a plugin name or module")
        if request.startswith("no:"):
            blocked.append(request[3:])
        else:
            wanted.append(request)
    return wanted, blocked


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers which distribution each entry-point plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.distributions: dict[str, importlib.metadata.Distribution] = {}
        # historic: every plugin registered from now on declares its own hooks as it registers
        self.hook.onnxopt_addhooks.call_historic(kwargs={"add": self.add_hookspecs})


def _register_entry_point(pm: PluginManager, ep: importlib.metadata.EntryPoint) -> None:
    if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
        return
    try:
        plugin = ep.load()
    except Exception as exc:  # a broken third-party install must be named, not crash the host
        raise UsageError(f"cannot load plugin {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}") from exc
    if pm.is_registered(plugin):
        return
    pm.register(plugin, name=ep.name)
    if ep.dist is not None:
        pm.distributions[ep.name] = ep.dist


def _register_module(pm: PluginManager, module_name: str) -> None:
    if pm.is_blocked(module_name) or pm.has_plugin(module_name):
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"-p {module_name}: no such plugin or module ({exc})") from exc
    if not pm.is_registered(module):
        pm.register(module, name=module_name)


def get_plugin_manager(requests: Sequence[str] = (), *, autoload: bool | None = None) -> PluginManager:
    """Build a plugin manager with the host defaults, the installed plugins and the ``-p`` requests.

    ``autoload=None`` follows the ``ONNXOPT_DISABLE_PLUGIN_AUTOLOAD`` environment variable.
    Raises :class:`UsageError` for an unknown ``-p`` name or a hook implementation that matches no hook
    (usually a misspelled ``onnxopt_...`` function).
    """
    from onnxopt import host_plugin

    pm = PluginManager()
    wanted, blocked = _split_requests(requests)
    for name in blocked:
        pm.set_blocked(name)
    pm.register(host_plugin, name=HOST_PLUGIN_NAME)
    try:
        pm.distributions[HOST_PLUGIN_NAME] = importlib.metadata.distribution("onnxopt")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        pass

    entry_points = _entry_points()
    if autoload is None:
        autoload = not _autoload_disabled()
    if autoload:
        for ep in entry_points.values():
            _register_entry_point(pm, ep)
    for name in wanted:
        if name in entry_points:
            _register_entry_point(pm, entry_points[name])
        else:
            _register_module(pm, name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise UsageError(str(exc)) from exc
    return pm


def plugin_infos(pm: PluginManager) -> list[PluginInfo]:
    """Describe every registered plugin: its name, distribution, version and the hooks it implements."""
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        dist = pm.distributions.get(name)
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        infos.append(
            PluginInfo(
                name=name,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
                hooks=hooks,
            )
        )
    return infos
