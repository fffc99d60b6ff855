"""``python -m services.enricher`` (and ``cdcflow enrich``): run the enricher until SIGTERM/SIGINT.

The signal handlers go in before anything heavy is imported, so a SIGTERM during start-up is a clean stop.
"""

from __future__ import annotations

import sys

from services.common.signals import Shutdown

__all__ = ["main"]


def main() -> None:
    shutdown = Shutdown()
    shutdown.install()
    from services.common.logging import configure_logging
    from services.common.settings import load_settings
    from services.enricher.wiring import run_enricher

    settings = load_settings()
    configure_logging(settings.log)
    sys.exit(run_enricher(settings, shutdown))


if __name__ == "__main__":
    main()
