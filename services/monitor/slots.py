"""Replication slots (``pg_replication_slots``): how much WAL each holds back, and whether it is at risk.

A slot that nobody reads keeps every WAL segment since its ``restart_lsn``: the disk fills, and once
``max_slot_wal_keep_size`` is passed the slot is ``unreserved`` then ``lost`` (the connector must snapshot
again). The connection is opened per poll and closed at once: the monitor holds no backend between polls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.common.metrics import MonitorMetrics

__all__ = ["WAL_STATUSES", "SlotProbe", "SlotState", "report_slots"]

#: Every ``wal_status`` PostgreSQL reports (13 and later), each one a series so a change is a switch of 1 and 0.
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")

# On a standby pg_current_wal_lsn() fails: the replay position stands in for it.
_QUERY = """
select slot_name, active, wal_status,
       pg_wal_lsn_diff(position, restart_lsn)::bigint,
       pg_wal_lsn_diff(position, confirmed_flush_lsn)::bigint
from pg_replication_slots,
     lateral (select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
                          else pg_current_wal_lsn() end as position) here
order by slot_name
"""


@dataclass(frozen=True, slots=True)
class SlotState:
    slot: str
    active: bool
    wal_status: str | None
    retained_bytes: int | None
    confirmed_flush_lag_bytes: int | None  # None for a physical slot


def report_slots(metrics: MonitorMetrics, slots: Sequence[SlotState], previous: set[str]) -> set[str]:
    """Set every slot's gauges; drop the series of slots that are gone. Returns the slots reported."""
    for slot in slots:
        metrics.slot_active.labels(slot.slot).set(1 if slot.active else 0)
        if slot.retained_bytes is not None:
            metrics.slot_retained_bytes.labels(slot.slot).set(slot.retained_bytes)
        if slot.confirmed_flush_lag_bytes is not None:
            metrics.slot_confirmed_flush_lag_bytes.labels(slot.slot).set(slot.confirmed_flush_lag_bytes)
        statuses = WAL_STATUSES if slot.wal_status in (*WAL_STATUSES, None) else (*WAL_STATUSES, slot.wal_status)
        for status in statuses:
            metrics.slot_wal_status.labels(slot.slot, status).set(1 if status == slot.wal_status else 0)
    names = {slot.slot for slot in slots}
    for gone in previous - names:
        for gauge in (metrics.slot_active, metrics.slot_retained_bytes, metrics.slot_confirmed_flush_lag_bytes):
            gauge.remove(gone)
        for status in WAL_STATUSES:
            metrics.slot_wal_status.remove(gone, status)
    return names


class SlotProbe:
    """Every replication slot of the PostgreSQL server at ``dsn``."""

    name = "postgres"

    def __init__(self, dsn: str, metrics: MonitorMetrics, *, timeout_s: float) -> None:
        self._dsn = dsn
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._reported: set[str] = set()

    def close(self) -> None:
        """Nothing stays open between polls."""

    def poll(self) -> None:
        timeout_ms = int(self._timeout_s * 1000)
        with psycopg.connect(
            self._dsn,
            connect_timeout=max(1, round(self._timeout_s)),
            options=f"-c statement_timeout={timeout_ms}",
            autocommit=True,
        ) as conn:
            rows = conn.execute(_QUERY).fetchall()
        slots = [SlotState(str(r[0]), bool(r[1]), r[2], r[3], r[4]) for r in rows]
        self._reported = report_slots(self._metrics, slots, self._reported)
