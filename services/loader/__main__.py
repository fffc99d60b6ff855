"""``python -m services.loader [--once]`` (and ``cdcflow load``): settings → wiring → ``Loader.run()``."""

from __future__ import annotations

import sys

from services.common.logging import configure_logging
from services.common.settings import load_settings
from services.common.signals import Shutdown
from services.loader.wiring import run_loader

__all__ = ["main"]


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log)
    shutdown = Shutdown()
    shutdown.install()
    sys.exit(run_loader(settings, shutdown, once="--once" in sys.argv[1:]))


if __name__ == "__main__":
    main()
