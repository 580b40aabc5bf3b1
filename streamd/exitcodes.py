"""Exit codes of ``streamd`` (documented in docs/operations.md; the unit's RestartPreventExitStatus uses them)."""

from __future__ import annotations

from streamd.errors import ConfigError, ModelError

#: A clean stop (SIGTERM/SIGINT, everything drained in time), or a command that did its work.
EXIT_OK = 0
#: A runtime failure: a part failed while running, or a drain did not finish in time.
EXIT_FAILURE = 1
#: The configuration is invalid (unknown key, bad value, unreadable file or secret); the message names the key.
EXIT_CONFIG = 2
#: A face engine or model is unavailable (package not installed, model file missing or unloadable).
EXIT_UNAVAILABLE = 3


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error that ends the process."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, ModelError):  # EngineUnavailable is a ModelError
        return EXIT_UNAVAILABLE
    return EXIT_FAILURE
