"""``python -m services.consumer`` (and ``cdcflow consume``): run the lake writer until SIGTERM/SIGINT.

The signal handlers go in before anything heavy is imported: a SIGTERM while the writer is still starting
(an orchestrator scaling down, a rollout) is a clean stop with exit 0, not a kill.
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
    from services.consumer.wiring import run_writer, tune_allocator, tune_collector

    settings = load_settings()
    configure_logging(settings.log)
    tune_collector()
    tune_allocator(settings.writer.buffer_max_bytes)
    sys.exit(run_writer(settings, shutdown))


if __name__ == "__main__":
    main()
