"""The transform's last run, from the record it leaves in the lake (``_transform/last_run.json``).

The transform writes the record after every run, whatever its outcome, so the monitor can tell from outside
when silver and gold were last rebuilt and whether that run succeeded, also while the transform is down and
wherever it ran (a Kubernetes CronJob's pod is gone when the monitor looks).
"""

from __future__ import annotations

from services.common.lake import Lake
from services.common.metrics import MonitorMetrics
from services.transform.app import read_last_run

__all__ = ["TransformProbe"]


class TransformProbe:
    name = "transform"

    def __init__(self, lake: Lake, metrics: MonitorMetrics) -> None:
        self._lake = lake
        self._metrics = metrics

    def close(self) -> None:
        self._lake.close()

    def poll(self) -> None:
        run = read_last_run(self._lake)
        if run is None:
            return  # no run has finished yet: both gauges stay 0, as their help texts say
        self._metrics.transform_last_run.set(run.finished_at)
        self._metrics.transform_last_run_success.set(1 if run.success else 0)
