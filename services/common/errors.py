"""Error bases shared by every service.

Two marker classes tell the retry policy what to do: a :class:`TerminalError` will fail the same way
again (the record goes to the DLQ, the command exits), a :class:`TransientError` may pass on retry
(pause, back off, try again).
"""

import sys
from collections.abc import Callable

__all__ = ["ERROR_EXIT", "CdcflowError", "ConfigError", "TerminalError", "TransientError", "exit_on_error"]

ERROR_EXIT = 2
"""The exit status of a command that stopped on an error it expected (a traceback is for what nobody did)."""


class CdcflowError(Exception):
    """Base of every error cdcflow raises on purpose."""


class TerminalError(CdcflowError):
    """Retrying cannot help."""


class TransientError(CdcflowError):
    """Retrying later may help."""


class ConfigError(TerminalError):
    """The configuration is invalid or incomplete."""


def exit_on_error(main: Callable[[], object]) -> None:
    """Run a command's ``main``: a :class:`CdcflowError` it raises ends the process with one ``error:`` line on
    stderr and :data:`ERROR_EXIT`, the same from every entry point."""
    try:
        main()
    except CdcflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(ERROR_EXIT)
