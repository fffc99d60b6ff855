"""Errors of the deployment helpers."""

from services.common.errors import TerminalError

__all__ = ["DeployError"]


class DeployError(TerminalError):
    """A file the manifests are generated from is wrong, or a connector could not be registered."""
