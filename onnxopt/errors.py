"""The errors onnxopt reports to a user, each tied to the exit code a pipeline gates on.

0 means compared and within the gates, nothing less; 4 means written but not compared.

Anything raised as an :class:`OnnxoptError` is a known condition: the CLI prints its message as one line
and exits with its code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PLUGIN_FAILED = 3
#: The model was written but not compared with the original (no runnable inputs, or validation switched off).
EXIT_NOT_VALIDATED = 4


class OnnxoptError(Exception):
    """Base of every error onnxopt reports to the user as a single line."""

    exit_code = EXIT_BAD_INPUT


class UsageError(OnnxoptError):
    """A wrong command line, recipe, pass name or option value."""


class ModelError(OnnxoptError):
    """A model file that cannot be read, is unsafe, or is rejected by the checker."""


class DataError(OnnxoptError):
    """A dataset that cannot be read or does not fit the model's inputs."""


class PluginError(OnnxoptError):
    """A plugin raised or produced something unusable; the message names the plugin."""

    exit_code = EXIT_PLUGIN_FAILED

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin


class GateFailed(OnnxoptError):
    """A validation gate failed: the candidate does not compute what the reference computes."""

    exit_code = EXIT_GATE_FAILED
