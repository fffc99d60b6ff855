"""``python -m deploy.grafana``: write the dashboards' JSON; ``--check`` exits 1 when a checked-in copy is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.grafana.build import DASHBOARDS_DIR, stale, write


def main(argv: list[str] | None = None, directory: Path = DASHBOARDS_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.grafana", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the checked-in JSON, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        names = stale(directory)
        for name in names:
            print(f"stale: {directory / name}.json - run `make dashboards`")
        return 1 if names else 0
    for path in write(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
