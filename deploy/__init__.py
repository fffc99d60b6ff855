"""Deployment as code: Grafana dashboards (``deploy/grafana``) and Prometheus rules (``deploy/prometheus``)."""
