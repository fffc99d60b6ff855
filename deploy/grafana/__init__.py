"""cdcflow's Grafana dashboards as code; ``python -m deploy.grafana`` writes their JSON to ``dashboards/``."""

from deploy.grafana.build import DASHBOARDS, DASHBOARDS_DIR, render

__all__ = ["DASHBOARDS", "DASHBOARDS_DIR", "render"]
