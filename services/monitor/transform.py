"""The transform's last run, from the record it leaves in its work dir (``last_run.json``).

The transform writes the record after every run, whatever its outcome, so the monitor can tell from outside
when silver and gold were last rebuilt and whether that run succeeded, also while the transform is down.
"""

from __future__ import annotations

from pathlib import Path

from services.common.metrics import MonitorMetrics
from services.transform.app import read_last_run

__all__ = ["TransformProbe"]


class TransformProbe:
    name = "transform"

    def __init__(self, record: Path, metrics: MonitorMetrics) -> None:
        self._record = record
        self._metrics = metrics

    def close(self) -> None:
        """Nothing stays open."""

    def poll(self) -> None:
        run = read_last_run(self._record)
        if run is None:
            return  # no run has finished yet: no series, which alerts can tell with absent()
        self._metrics.transform_last_run.set(run.finished_at)
        self._metrics.transform_last_run_success.set(1 if run.success else 0)
