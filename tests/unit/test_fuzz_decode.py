"""The whole decode path under fuzzing: no input crashes, hangs or escapes, every record is accounted for, and
the native JSON reader treats every record as Arrow's reader alone does.

A bounded run of the structure-aware fuzzer (``tests/fuzz``) over mutations of real change events, in
child processes with a time limit, plus every kept crasher (``tests/fuzz/crashers``) and every known hostile
record (``tests/fuzz/known.py``) replayed as a regression case. The longer run is
``python -m tests.fuzz --seconds N``. ``FUZZ_SEED`` picks another seed for this run (the default is fixed,
so a failure here reproduces).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tests.fuzz.known import known_batches
from tests.fuzz.runner import (
    CRASHERS,
    SELF_TEST,
    Batch,
    Finding,
    Record,
    Worker,
    _differing_columns,
    build_batch,
    load_crasher,
    run_campaign,
)
from tests.fuzz.targets import FORMATS, load_seeds

SEED = int(os.environ.get("FUZZ_SEED", "2121"))
FUZZ_SECONDS = 45.0
# the families of mutations a run this long must have tried, or it proved little
MUTATION_FAMILIES = {
    "value",
    "source",
    "column",
    "duplicate_key",
    "escaped_key",
    "schema",
    "bytes",
    "avro",
    "tombstone",
}


@pytest.fixture(scope="module")
def replayer() -> Iterator[Worker]:
    """One decoding child for the replays (a new one takes over if a case kills it)."""
    worker = Worker()
    yield worker
    worker.close()


def _describe(finding: Finding) -> str:
    batch = finding.batch
    mutations = sorted({m for r in batch.records for m in r.mutations})
    return (
        f"{finding.verdict.kind} in {batch.target} ({batch.fmt}), {len(batch.records)} record(s) with {mutations}; "
        f"rerun: python -m tests.fuzz --batch {batch.seed}:{batch.index}\n{finding.verdict.detail[-1200:]}"
    )


def test_a_batch_is_the_same_whatever_was_built_before_it() -> None:
    """A finding is rerun from its seed and index alone (``--batch``), in a fresh process: what one batch's
    mutations do must not reach the batches built after it."""
    seeds = load_seeds()
    built = [build_batch(SEED, index, seeds).records for index in range(300)]
    again = [build_batch(SEED, index, seeds).records for index in reversed(range(300))][::-1]
    assert [i for i, (a, b) in enumerate(zip(built, again, strict=True)) if a != b] == []


def test_tables_compared_by_the_harness_hold_a_nan_equal_to_a_nan_and_nothing_else() -> None:
    """Arrow's equality holds no NaN equal to anything: rows with a NaN read back from Parquet were a finding."""
    nan = float("nan")

    def rows(double: float, series: list[float], offset: int = 7) -> pa.Table:
        return pa.table({"_kafka_partition": [1], "_kafka_offset": [offset], "double": [double], "series": [series]})

    assert _differing_columns(rows(nan, [1.0, nan]), rows(nan, [1.0, nan])) == []
    assert _differing_columns(rows(nan, [1.0, nan]), rows(0.5, [1.0, nan])) == ["column double: at (1, 7): nan != 0.5"]
    assert _differing_columns(rows(nan, [nan]), rows(nan, [nan, nan])) == [
        "column series: at (1, 7): [nan] != [nan, nan]"
    ]
    assert _differing_columns(rows(nan, []), rows(nan, [], offset=8)) == ["column _kafka_offset: at (1, 7): 7 != 8"]


def test_a_bounded_fuzz_run_finds_no_crash_hang_escape_or_lost_record() -> None:
    campaign = run_campaign(SEED, FUZZ_SECONDS, jobs=2, max_findings=3, minimise_budget_s=30.0, differential=True)
    print(f"\n[fuzz] {campaign.summary()}")
    assert campaign.findings == [], "\n\n".join(map(_describe, campaign.findings))
    assert campaign.batches >= 20, campaign.summary()
    assert set(campaign.formats) == set(FORMATS), campaign.summary()
    assert set(campaign.mutations) >= MUTATION_FAMILIES, sorted(campaign.mutations)
    reasons = {k for k in campaign.outcomes if k.startswith("failure:")}
    assert campaign.outcomes["rows"] > 0, campaign.summary()
    assert len(reasons) >= 5, campaign.summary()


@pytest.mark.parametrize("path", sorted(CRASHERS.glob("*.json")), ids=lambda p: p.stem)
def test_a_kept_crasher_now_decodes_and_accounts_for_every_record(path: Path, replayer: Worker) -> None:
    verdict = replayer.replay(load_crasher(path))
    assert verdict.ok, f"{path.name}: {verdict.kind}\n{verdict.detail[-2000:]}"


@pytest.mark.parametrize("name", sorted(known_batches()))
def test_a_known_hostile_record_is_refused_and_accounted_for(name: str, replayer: Worker) -> None:
    verdict = replayer.replay(known_batches()[name])
    assert verdict.ok, f"{name}: {verdict.kind}\n{verdict.detail[-2000:]}"
    # none of them can be carried exactly: each is a failure (to the DLQ), never a row
    failures = sum(n for outcome, n in verdict.outcomes.items() if outcome.startswith("failure:"))
    assert (verdict.outcomes["rows"], failures) == (0, 1), (name, dict(verdict.outcomes))


@pytest.mark.parametrize(("command", "kind"), [(b"segfault", "crash"), (b"abort", "crash"), (b"raise", "exception")])
def test_the_harness_sees_a_dying_or_raising_decoder(command: bytes, kind: str) -> None:
    worker = Worker()
    try:
        verdict = worker.run(Batch(SELF_TEST, "json", (Record(command, 0, 0),)))
        assert verdict.kind == kind, verdict
        assert worker.run(Batch(SELF_TEST, "json", (Record(b"fine", 0, 1),))).ok  # a new child took over
    finally:
        worker.close()


def test_the_harness_sees_a_hanging_decoder() -> None:
    worker = Worker()
    try:
        assert worker.run(Batch(SELF_TEST, "json", (Record(b"hang", 0, 0),)), limit_s=3.0).kind == "hang"
    finally:
        worker.close()
