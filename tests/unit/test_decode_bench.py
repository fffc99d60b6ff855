"""The decode benchmark's figures, and a pass that refuses a sample whose events do not all decode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.decode_bench import _batches, _pass_cpu_s, decode_figures
from services.common.contracts.model import TableContract
from services.common.contracts.store import load_contracts
from services.common.debezium.json_batch import JsonEventDecoder

REPO = Path(__file__).resolve().parents[2]
TOPIC = "cdcflow.lending.transactions"


def test_each_size_against_the_largest() -> None:
    figures = decode_figures(1_000, {1_000: 0.002, 100: 0.010}, rounds=50)
    assert figures["events_per_pass"] == 50_000
    assert figures["baseline_batch"] == 1_000
    base, small = figures["sizes"]
    assert (base["batch"], base["calls_per_pass"], base["cpu_us_per_event"], base["vs_baseline"]) == (
        1_000,
        50,
        0.04,
        1.0,
    )
    assert (small["batch"], small["calls_per_pass"]) == (100, 500)
    assert small["cpu_us_per_event"] == 0.2
    assert small["cpu_ms_per_call"] == 0.02
    assert small["vs_baseline"] == 5.0


def test_a_size_beyond_the_sample_is_the_sample() -> None:
    figures = decode_figures(700, {5_000: 0.001, 100: 0.002})
    assert figures["baseline_batch"] == 700
    assert [s["batch"] for s in figures["sizes"]] == [700, 100]
    assert [s["calls_per_pass"] for s in figures["sizes"]] == [1, 7]


def _contract() -> TableContract:
    (contract,) = (c for c in load_contracts(REPO / "schemas") if c.qualified_name == "lending.transactions")
    return contract


def _event(transaction_id: int) -> bytes:
    after = {
        "transaction_id": transaction_id,
        "facility_id": None,
        "customer_id": 7,
        "transaction_type": "payment",
        "amount": 12.5,
        "currency": "EUR",
        "exchange_rate": None,
        "booked_at": "2026-11-22T22:49:40.402545Z",
        "value_date": 20_486,
        "reference": None,
    }
    source = {"ts_ms": 1_795_387_780_402, "ts_us": 1_795_387_780_402_545, "lsn": 1, "txId": 2, "snapshot": "false"}
    return json.dumps({"before": None, "after": after, "source": source, "op": "c", "ts_ms": 1}).encode()


def test_a_pass_decodes_every_event_or_stops() -> None:
    decoder = JsonEventDecoder(_contract())
    good = [_event(i) for i in range(1, 11)]
    assert _pass_cpu_s(decoder, TOPIC, _batches(TOPIC, good, 3)) >= 0
    with pytest.raises(SystemExit, match="10 events decoded to 9 rows and 1 failures"):
        _pass_cpu_s(decoder, TOPIC, _batches(TOPIC, [*good[:9], b"not json"], 3))
