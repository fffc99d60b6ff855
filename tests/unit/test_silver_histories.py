"""Silver against the history it came from, on generated histories rather than hand-placed rows.

A source table of many keys lives through a seeded random history: inserts, updates and deletes with rising
LSNs, each sent to the partition of its key at the topic's partition count of the moment (raised twice along
the way), some lost on the way to bronze (dead-lettered), some sent again a little later (a connector restart
resends what it had not committed), and backfill reads of present rows (no LSN, the value of the moment). A
second kind of history truncates the table now and then and loses nothing (a read after a truncate of a key
whose insert was lost is a known limit: README, "Backfills and tables added later"). Bronze is loaded in three
batches, silver built incrementally after each and then from scratch; each time silver must hold, for every
key, what replaying the records that reached bronze, in the order they were sent, gives.
"""

from __future__ import annotations

import datetime as dt
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.customers_bronze import BASE, change, incremental_read, load_bronze, query, silver_env, transform

KEYS, STEPS, BATCHES = 60, 700, 3
RAISES = (STEPS * 2 // 5, STEPS * 7 // 10)  # steps at which an operator adds 6 partitions to the topic
STATUSES = ("ACTIVE", "INACTIVE", "SUSPENDED")
Value = tuple[str, str]  # (status, notes): notes names the version


@dataclass
class _History:
    """The source table, the topic its changes are sent to, and what reached bronze."""

    rng: random.Random
    lose: float  # share of row changes dead-lettered
    truncate: float  # share of steps that truncate the table
    partitions: int = 6
    lsn: int = 1_000
    clock: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    table: dict[int, Value] = field(default_factory=dict)
    delivered: list[tuple[str, int | None, Value | None]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    sent_before: list[int] = field(default_factory=list)  # per row: records of `delivered` sent up to it
    resend: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def _place(self, key: int | None) -> tuple[int, int]:
        """The partition Kafka's producer picks at today's partition count, and the record's offset there."""
        partition = self.rng.randrange(self.partitions) if key is None else zlib.crc32(b"%d" % key) % self.partitions
        offset = self.offsets.get(partition, 0)
        self.offsets[partition] = offset + 1
        return partition, offset

    def _send(self, row: dict[str, Any], key: int | None, value: Value | None, step: int) -> None:
        if row["_op"] != "t" and self.rng.random() < self.lose:
            return
        self.delivered.append((row["_op"], key, value))
        self.rows.append(row)
        self.sent_before.append(len(self.delivered))
        if row["_source_lsn"] is not None and self.rng.random() < 0.05:
            self.resend.append((step + self.rng.randint(1, 6), row))

    def _send_again(self, step: int) -> None:
        due = [(at, row) for at, row in self.resend if at <= step]
        for at, row in due:
            self.resend.remove((at, row))
            partition, offset = self._place(row.get("customer_id"))
            self.rows.append(
                row
                | {
                    "_kafka_partition": partition,
                    "_kafka_offset": offset,
                    "_kafka_timestamp": BASE + dt.timedelta(seconds=self.clock),
                }
            )
            self.sent_before.append(len(self.delivered))

    def step(self, step: int) -> None:
        self.clock += 1
        if step in RAISES:
            self.partitions += 6
        self._send_again(step)
        roll = self.rng.random()
        if roll < self.truncate:
            self.lsn += self.rng.randint(1, 5)
            self.table.clear()
            partition, offset = self._place(None)
            row = change("t", self.lsn, 1, offset=offset, partition=partition, emitted=self.clock)
            self._send(row, None, None, step)
            return
        key = self.rng.randint(1, KEYS)
        partition, offset = self._place(key)
        if roll < 0.8:
            self.lsn += self.rng.randint(1, 5)
            op = "u" if key in self.table else "c"
            value: Value | None = (self.rng.choice(STATUSES), f"v{self.lsn}")
            if op == "u" and self.rng.random() < 0.2:
                op, value = "d", None
                del self.table[key]
            elif value is not None:
                self.table[key] = value
            status, notes = value or ("ACTIVE", None)
            row = change(
                op, self.lsn, 1, key, status=status, notes=notes, offset=offset, partition=partition, emitted=self.clock
            )
            self._send(row, key, value, step)
        elif key in self.table:
            status, notes = self.table[key]
            row = incremental_read(offset, key, status, notes=notes, partition=partition, emitted=self.clock)
            self._send(row, key, (status, notes), step)

    def replayed(self, upto: int) -> dict[int, Value]:
        """What the first ``upto`` records that reached bronze give, replayed in the order they were sent."""
        state: dict[int, Value] = {}
        for op, key, value in self.delivered[:upto]:
            if op == "t":
                state.clear()
            elif op == "d":
                state.pop(key or 0, None)
            elif key is not None and value is not None:
                state[key] = value
        return state


def _history(seed: int, *, lose: float, truncate: float) -> _History:
    history = _History(random.Random(seed), lose=lose, truncate=truncate)
    for step in range(STEPS):
        history.step(step)
    return history


def _silver(path: Path) -> dict[int, Value]:
    rows = query(path, "select customer_id, status, notes from silver.customers")
    return {int(key): (str(status), str(notes)) for key, status, notes in rows}


def _current_history(path: Path) -> dict[int, Value]:
    rows = query(path, "select customer_id, status, notes from silver.customers_history where is_current")
    return {int(key): (str(status), str(notes)) for key, status, notes in rows}


@pytest.mark.parametrize(
    ("seed", "lose", "truncate"),
    [(seed, 0.1, 0.0) for seed in (20261206, 6121, 77, 4242)] + [(seed, 0.0, 0.01) for seed in (1206, 9)],
    ids=[f"lost-changes-{n}" for n in range(1, 5)] + ["truncates-1", "truncates-2"],
)
def test_silver_holds_what_bronze_replayed_in_sending_order_gives(
    seed: int, lose: float, truncate: float, tmp_path: Path
) -> None:
    history = _history(seed, lose=lose, truncate=truncate)
    assert sum(1 for r in history.rows if r["_source_lsn"] is None) > 20  # backfill reads
    assert len({r["_kafka_partition"] for r in history.rows}) > 12  # the raised partitions are used
    env = silver_env(tmp_path)
    warehouse = Path(env["CDCFLOW_WAREHOUSE__DUCKDB_PATH"])
    assert transform(env)[0] == 0
    size = -(-len(history.rows) // BATCHES)
    for batch in range(BATCHES):
        end = min((batch + 1) * size, len(history.rows))
        rows = history.rows[batch * size : end]
        load_bronze(warehouse, [r | {"_loaded_at": BASE + dt.timedelta(hours=batch + 1)} for r in rows])
        assert transform(env)[0] == 0, "dbt build failed (silver_matches_bronze included)"
        expected = history.replayed(history.sent_before[end - 1])
        assert _silver(warehouse) == expected, f"after batch {batch + 1}"
        assert _current_history(warehouse) == expected, f"after batch {batch + 1}"
    assert transform(env, full_refresh=True)[0] == 0
    assert _silver(warehouse) == expected
