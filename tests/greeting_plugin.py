"""A third-party plugin that uses the extension points a built-in one does: its own hook and its own command.

Loaded with ``-p greeting_plugin`` (tests/ on PYTHONPATH). It declares ``greeting_text`` (``onnxopt_addhooks``),
implements it once here, and adds ``onnxopt greet``, which calls the hook through the plugin manager's relay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import onnxopt


class GreetingSpecs:
    @onnxopt.hookspec(firstresult=True)
    def greeting_text(self, name: str) -> str | None:
        """The greeting for ``name``."""


@onnxopt.hookimpl
def onnxopt_addhooks(add: Callable[[object], None]) -> None:
    add(GreetingSpecs)


@onnxopt.hookimpl
def greeting_text(name: str) -> str:
    return f"hello, {name}"


@onnxopt.hookimpl
def onnxopt_register_commands(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    parser = add_command("greet", help="say hello through a hook this plugin declared", handler=_greet)
    parser.add_argument("name")


def _greet(args: argparse.Namespace) -> int:
    sys.stdout.write(args.plugin_manager.hook.greeting_text(name=args.name) + "\n")
    return 0
