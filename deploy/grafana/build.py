"""Render every dashboard to the JSON Grafana imports, and write or check the checked-in copies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from deploy.grafana.lag import lag_dashboard
from deploy.grafana.pipeline import pipeline_dashboard
from deploy.grafana.source import source_dashboard

__all__ = ["DASHBOARDS", "DASHBOARDS_DIR", "render", "stale", "write"]

DASHBOARDS_DIR = Path(__file__).parent / "dashboards"

#: File name (without .json) → the builder of that dashboard.
DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "lag": lag_dashboard,
    "pipeline": pipeline_dashboard,
    "source": source_dashboard,
}


def render(name: str) -> str:
    """The dashboard's JSON, byte for byte what is checked in: sorted keys, so a regeneration diffs cleanly."""
    built = DASHBOARDS[name]().build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number  # Grafana links, alerts and "view panel" URLs address panels by a unique id
    return json.dumps(built, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DASHBOARDS:
        path = directory / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of the dashboards whose checked-in JSON differs from what the code renders."""
    return [
        name
        for name in DASHBOARDS
        if not (directory / f"{name}.json").exists()
        or (directory / f"{name}.json").read_text(encoding="utf-8") != render(name)
    ]
