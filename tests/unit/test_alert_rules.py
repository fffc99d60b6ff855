"""The alert rules: promtool accepts them and their unit tests pass, each alert has a firing and a silent
case, and each carries `for`, a severity, a summary, a description and a runbook section that exists.

promtool is a binary of Debian's prometheus package, unpacked by `make monitoring-tools` (a prerequisite of
`make test`); it starts no server.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.fixtures.monitoring import RULES_DIR, RUNBOOK, alerts, counters_outside_rate, tool

ALERTS = alerts()
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*_test.yml"))


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's second-level headings (lowercase, spaces to dashes)."""
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_promtool_checks_the_rule_files() -> None:
    assert RULE_FILES, "no deploy/prometheus/*.rules.yml"
    result = _promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert TEST_FILES
    result = _promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule made wrong on purpose (the lag SLO raised tenfold) fails its test: the tests check outcomes."""
    broken = tmp_path / "cdcflow.rules.yml"
    text = RULE_FILES[0].read_text(encoding="utf-8")
    assert text.count("(cdcflow_consumer_lag_seconds) > 300") == 1
    broken.write_text(text.replace("(cdcflow_consumer_lag_seconds) > 300", "(cdcflow_consumer_lag_seconds) > 3000"))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "pipeline_test.yml").write_text((RULES_DIR / "tests" / "pipeline_test.yml").read_text(encoding="utf-8"))
    result = _promtool("test", "rules", tests / "pipeline_test.yml")
    assert result.returncode != 0
    assert "CdcflowConsumerLagHigh" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, set[str]] = defaultdict(set)
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].add("firing" if case.get("exp_alerts") else "silent")
    for alert in ALERTS:
        assert cases[alert["alert"]] == {"firing", "silent"}, f"{alert['alert']}: {sorted(cases[alert['alert']])}"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: str(a["alert"]))
def test_every_alert_is_complete(alert: dict[str, Any]) -> None:
    assert alert["alert"].startswith("Cdcflow")
    assert promql_parser.parse_duration(alert["for"]).total_seconds() > 0
    assert alert["labels"]["severity"] in {"warning", "critical"}
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == f"docs/runbook.md#{alert['alert'].lower()}"
    assert alert["alert"].lower() in _runbook_anchors(), f"docs/runbook.md has no section {alert['alert']}"
    promql_parser.parse(alert["expr"])
    assert counters_outside_rate(alert["expr"]) == []


def test_the_runbook_has_a_section_per_alert_and_no_other() -> None:
    assert _runbook_anchors() == {a["alert"].lower() for a in ALERTS}
    assert len({a["alert"] for a in ALERTS}) == len(ALERTS)


def test_the_issue_asks_for_these_alerts() -> None:
    exprs = " ".join(a["expr"] for a in ALERTS)
    for needle in (
        "cdcflow_replication_slot_retained_bytes",
        "cdcflow_replication_slot_active",
        "cdcflow_connector_up",
        "cdcflow_connector_task_running",
        "cdcflow_consumer_lag_seconds",
        "cdcflow_dlq_records_total",
        "cdcflow_loader_last_success_timestamp_seconds",
        "cdcflow_transform_last_run_timestamp_seconds",
        "cdcflow_transform_last_run_success",
        "cdcflow_bronze_freshness_seconds",
    ):
        assert needle in exprs
    for job in ("writer", "loader", "monitor", "connect"):
        assert f'absent(up{{job="{job}"}} == 1)' in exprs
    # the transform runs in a process of its own or in the loader's: its absence is that of its own metric
    assert "absent(cdcflow_transform_duration_seconds)" in exprs


def test_the_example_scrape_config_is_valid_and_scrapes_every_alerted_job(tmp_path: Path) -> None:
    config = RULES_DIR / "prometheus.yml"
    checked = tmp_path / "prometheus.yml"
    # promtool resolves rule_files relative to the config: check a copy that sits beside the rules it names
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["rule_files"] = [str(RULES_DIR / Path(f).name) for f in document["rule_files"]]
    checked.write_text(yaml.safe_dump(document))
    result = _promtool("check", "config", checked)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in document["scrape_configs"]}
    assert jobs >= {"writer", "loader", "transform", "monitor", "connect"}
