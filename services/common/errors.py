"""Error bases shared by every service.

Two marker classes tell the retry policy what to do: a :class:`TerminalError` will fail the same way
again (the record goes to the DLQ, the command exits), a :class:`TransientError` may pass on retry
(pause, back off, try again).
"""

__all__ = ["CdcflowError", "ConfigError", "TerminalError", "TransientError"]


class CdcflowError(Exception):
    """Base of every error cdcflow raises on purpose."""


class TerminalError(CdcflowError):
    """Retrying cannot help."""


class TransientError(CdcflowError):
    """Retrying later may help."""


class ConfigError(TerminalError):
    """The configuration is invalid or incomplete."""
