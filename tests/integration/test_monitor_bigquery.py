"""The monitor's warehouse probe on BigQuery: the real client against the local BigQuery emulator.

Freshness and last loads come from bronze and its load manifest; after the first read each poll asks only for
rows at or after the newest it knows, and a table with nothing new keeps its value.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import bigquery
from prometheus_client import CollectorRegistry

from services.common.metrics import MonitorMetrics, new_registry
from services.common.settings import load_settings
from services.monitor.warehouse import WarehouseProbe
from services.monitor.warehouse_bigquery import BigQueryBronze
from services.warehouse.bigquery import bigquery_client
from tests.fixtures.bqemulator import PROJECT, BigQueryEmulator

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _client(emulator: BigQueryEmulator) -> bigquery.Client:
    settings = load_settings(
        {
            "CDCFLOW_WAREHOUSE__BACKEND": "bigquery",
            "CDCFLOW_WAREHOUSE__BIGQUERY_PROJECT": PROJECT,
            "CDCFLOW_WAREHOUSE__BIGQUERY_API_ENDPOINT": emulator.endpoint,
        }
    )
    return bigquery_client(settings.warehouse)


def _run(client: bigquery.Client, sql: str) -> None:
    client.query(sql).result(timeout=60)


@pytest.fixture
def bronze(bigquery_emulator: BigQueryEmulator) -> tuple[bigquery.Client, str]:
    client, dataset = _client(bigquery_emulator), f"bronze_{uuid.uuid4().hex[:8]}"
    client.create_dataset(f"{PROJECT}.{dataset}")
    for table in ("lending__customers", "lending__facilities"):
        _run(client, f"create table `{PROJECT}.{dataset}.{table}` (id int64, _source_ts timestamp)")
    _run(
        client, f"create table `{PROJECT}.{dataset}._cdcflow_load_manifest` (bronze_table string, loaded_at timestamp)"
    )
    _run(
        client,
        f"insert into `{PROJECT}.{dataset}.lending__customers` values"
        f" (1, timestamp '{NOW - timedelta(days=3):%Y-%m-%d %H:%M:%S}+00'),"
        f" (2, timestamp '{NOW - timedelta(seconds=90):%Y-%m-%d %H:%M:%S}+00')",
    )
    _run(
        client,
        f"insert into `{PROJECT}.{dataset}._cdcflow_load_manifest` values"
        f" ('lending__customers', timestamp '{NOW - timedelta(seconds=60):%Y-%m-%d %H:%M:%S}+00')",
    )
    return client, dataset


def _value(registry: CollectorRegistry, name: str, table: str) -> float | None:
    return registry.get_sample_value(name, {"table": table})


def test_freshness_and_last_load_from_bigquery_bronze(bronze: tuple[bigquery.Client, str]) -> None:
    client, dataset = bronze
    registry = new_registry(with_process_metrics=False)
    now = [NOW.timestamp()]
    reader = BigQueryBronze(client, dataset=dataset, location="US", timeout_s=60)
    probe = WarehouseProbe(reader, MonitorMetrics(registry), clock=lambda: now[0])
    probe.poll()
    assert _value(registry, "cdcflow_bronze_freshness_seconds", "lending.customers") == pytest.approx(90)
    assert _value(registry, "cdcflow_bronze_freshness_seconds", "lending.facilities") is None  # empty table
    last_load = (NOW - timedelta(seconds=60)).timestamp()
    assert _value(registry, "cdcflow_bronze_last_load_timestamp_seconds", "lending.customers") == last_load

    # a newer change and a newer load arrive; the next poll reads only from what it knew
    _run(
        client,
        f"insert into `{PROJECT}.{dataset}.lending__customers` values"
        f" (3, timestamp '{NOW - timedelta(seconds=30):%Y-%m-%d %H:%M:%S}+00')",
    )
    _run(
        client,
        f"insert into `{PROJECT}.{dataset}._cdcflow_load_manifest` values"
        f" ('lending__facilities', timestamp '{NOW - timedelta(seconds=10):%Y-%m-%d %H:%M:%S}+00')",
    )
    now[0] += 5
    probe.poll()
    assert _value(registry, "cdcflow_bronze_freshness_seconds", "lending.customers") == pytest.approx(35)
    assert _value(registry, "cdcflow_bronze_last_load_timestamp_seconds", "lending.customers") == last_load
    loaded = (NOW - timedelta(seconds=10)).timestamp()
    assert _value(registry, "cdcflow_bronze_last_load_timestamp_seconds", "lending.facilities") == loaded

    now[0] += 20  # nothing new: the newest known change only gets older
    probe.poll()
    assert _value(registry, "cdcflow_bronze_freshness_seconds", "lending.customers") == pytest.approx(55)
    probe.close()
