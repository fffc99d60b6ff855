"""``python -m services.monitor`` (and ``cdcflow monitor``): poll until SIGTERM/SIGINT, serve ``/metrics``."""

from __future__ import annotations

import sys

from services.common.signals import Shutdown

__all__ = ["main"]


def main() -> None:
    shutdown = Shutdown()
    shutdown.install()
    from services.common.logging import configure_logging
    from services.common.settings import load_settings
    from services.monitor.wiring import run_monitor

    settings = load_settings()
    configure_logging(settings.log)
    sys.exit(run_monitor(settings, shutdown))


if __name__ == "__main__":
    main()
