"""``python -m services.transform [--once | --every SECONDS] [--select …]`` (and ``cdcflow transform``).

Settings → wiring → ``Transformer.run()``, like every service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.common.logging import configure_logging
from services.common.settings import load_settings
from services.common.signals import Shutdown
from services.transform.wiring import run_transform

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.transform", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one run, then exit (1 when a model or test failed)")
    mode.add_argument("--every", type=float, metavar="SECONDS", help="a run every SECONDS (default: settings)")
    parser.add_argument("--select", nargs="+", default=[], help="dbt node selection (default: everything)")
    parser.add_argument("--exclude", nargs="+", default=[], help="dbt nodes to leave out")
    parser.add_argument("--full-refresh", action="store_true", help="rebuild incremental models from bronze")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log)
    shutdown = Shutdown()
    shutdown.install()
    sys.exit(
        run_transform(
            settings,
            shutdown,
            once=args.once,
            every_s=args.every,
            select=args.select,
            exclude=args.exclude,
            full_refresh=args.full_refresh,
        )
    )


if __name__ == "__main__":
    main()
