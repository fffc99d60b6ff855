"""``python -m services.loader [--once]`` (and ``cdcflow load``): settings → wiring → ``Loader.run()``."""

from __future__ import annotations

import sys
from collections.abc import Callable

from services.common.logging import configure_logging
from services.common.settings import load_settings
from services.common.signals import Shutdown
from services.loader.wiring import run_loader

__all__ = ["main"]


def main(before_commit: Callable[[], None] | None = None) -> None:
    """Run the loader with the settings of the environment; ``before_commit`` runs between staging a batch and
    committing it (a test's entry point crashes there)."""
    settings = load_settings()
    configure_logging(settings.log)
    shutdown = Shutdown()
    shutdown.install()
    sys.exit(run_loader(settings, shutdown, once="--once" in sys.argv[1:], before_commit=before_commit))


if __name__ == "__main__":
    main()
