"""``python -m services.consumer`` (and ``cdcflow consume``): run the lake writer until SIGTERM/SIGINT.

The signal handlers go in before anything heavy is imported: a SIGTERM while the writer is still starting
(an orchestrator scaling down, a rollout) is a clean stop with exit 0, not a kill.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from services.common.errors import CdcflowError, exit_on_error
from services.common.imports import refuse_imports
from services.common.libc import is_glibc
from services.common.signals import Shutdown

if TYPE_CHECKING:
    from services.common.lake import LakeOpener

__all__ = ["UNUSED", "main", "prepare_process"]

UNUSED = ("pandas",)
"""Installed beside the writer (the BigQuery adapter needs it) and never used by it: pyarrow would load it on
its first conversion of Python values, ~33 MiB resident (services/common/imports.py)."""


def prepare_process() -> None:
    """What has to happen before pyarrow is loaded.

    Libraries the writer never uses are refused (:data:`UNUSED`). Arrow's C++ default allocator becomes the C
    library's, as ``tune_allocator`` makes pyarrow's: Arrow's own code (Parquet's encoders, compute kernels)
    allocates from the C++ default whatever pyarrow's is, and its bundled allocator reserves a region advised
    for huge pages, where a few megabytes in use keep ~20 MiB resident. An operator's own
    ``ARROW_DEFAULT_MEMORY_POOL`` is kept, and so are the defaults outside glibc.
    """
    refuse_imports(*UNUSED, why="the lake writer never uses it (services/consumer/__main__.py)")
    if is_glibc():
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


def main(lake_opener: LakeOpener | None = None) -> None:
    """Run the writer with the settings of the environment; ``lake_opener`` replaces ``open_lake`` (a test's
    entry point passes one that wraps the lake)."""
    shutdown = Shutdown()
    shutdown.install()
    prepare_process()
    from services.common.lake import open_lake
    from services.common.logging import configure_logging, get_logger
    from services.common.settings import load_settings
    from services.consumer.wiring import run_writer, tune_allocator, tune_collector

    settings = load_settings()
    configure_logging(settings.log)
    tune_collector()
    tune_allocator(settings.writer.buffer_max_bytes)
    try:
        code = run_writer(settings, shutdown, lake_opener=lake_opener or open_lake)
    except CdcflowError as exc:  # e.g. Kafka out of reach at start: one event, then the caller's one line
        get_logger("services.consumer").error("writer.failed", error=str(exc), kind=type(exc).__name__)
        raise
    sys.exit(code)


if __name__ == "__main__":
    exit_on_error(main)
