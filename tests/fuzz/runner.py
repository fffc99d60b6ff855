"""Batches of mutated events, decoded in child processes that may crash or hang; findings and crashers.

Each batch is built from ``(seed, index)`` alone, so any batch of any run can be rebuilt. A child process
decodes batches one after another; the parent gives each a time limit. A batch *fails* when the child dies
(a signal, an abort, a Rust panic that took the process down), when it runs past the limit, when an
exception escapes ``decode()``, or when the result does not account for every record exactly once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tests.fuzz.targets import FORMATS, Format, Seed, contract, load_seeds, topic

__all__ = [
    "CRASHERS",
    "SELF_TEST",
    "Batch",
    "Campaign",
    "Finding",
    "Record",
    "Verdict",
    "Worker",
    "build_batch",
    "load_crasher",
    "minimise",
    "run_campaign",
    "save_crasher",
]

CRASHERS = Path(__file__).parent / "crashers"
TIME_LIMIT_S = 20.0  # a batch decodes in well under a second; a value that takes this long is a hang
SLOW_S = 5.0  # a few records (a minimised or kept crasher) that take this long to decode are a runaway cost
MAX_BATCH = 48
PARTITIONS = 3
_CONTEXT = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or Arrow pools from a fork


@dataclass(frozen=True, slots=True)
class Record:
    value: bytes | None
    partition: int
    offset: int
    mutations: tuple[str, ...] = ()
    control: bool = False  # an unmutated seed event: it must become a row whatever its neighbours are


@dataclass(frozen=True, slots=True)
class Batch:
    target: str
    fmt: Format
    records: tuple[Record, ...]
    seed: int = 0
    index: int = -1
    differential: bool = False  # JSON: the native reader's result must equal Arrow's reader's alone

    def subset(self, records: Sequence[Record]) -> Batch:
        return Batch(self.target, self.fmt, tuple(records), self.seed, self.index, self.differential)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # "ok", "crash", "hang", "exception", "accounting", "sink"
    detail: str = ""
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)  # rows, tombstones and failures by reason

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


# --- building batches -------------------------------------------------------------------------------------


def _encode_control(target: str, fmt: Format, value: bytes) -> bytes:
    """A seed as ``fmt`` carries it, unmutated."""
    from tests.fuzz.mutate import avro_bytes, avro_event, connect_schema, dump

    table = contract(target)
    if fmt == "json-schema":
        return b'{"schema":' + dump(connect_schema(table)) + b',"payload":' + value + b"}"
    if fmt == "avro-single-object":
        return avro_bytes(table, avro_event(table, value))
    return value


def build_batch(seed: int, index: int, seeds: dict[str, list[Seed]]) -> Batch:
    """Batch ``index`` of the run seeded ``seed``: a table, a format, mutants among unmutated events and
    tombstones, spread over a few partitions in offset order."""
    from tests.fuzz.mutate import mutate, run_on

    rng = random.Random(f"{seed}:{index}")
    target = rng.choice(sorted(seeds))
    fmt = rng.choice(FORMATS)
    events = [s.value for s in seeds[target] if s.value is not None]
    table = contract(target)
    next_offset = [rng.randrange(0, 10**6) for _ in range(PARTITIONS)]
    records: list[Record] = []
    for _ in range(rng.choice((1, 2, 5, 16, MAX_BATCH))):
        partition = rng.randrange(PARTITIONS)
        offset = next_offset[partition]
        next_offset[partition] += 1
        roll = rng.random()
        event = rng.choice(events)
        if roll < 0.05:
            records.append(Record(None, partition, offset, ("tombstone",)))
        elif roll < 0.3:
            records.append(Record(_encode_control(target, fmt, event), partition, offset, control=True))
        elif roll < 0.33 and fmt == "json":  # records in a row that Arrow's reader could read as others
            for step, mutant in enumerate(run_on(rng, event, rng.choice(events))):
                records.append(Record(mutant.value, partition, offset + step, mutant.mutations))
            next_offset[partition] += 2
        else:
            mutant = mutate(rng, table, fmt, event, rng.choice(events))
            records.append(Record(mutant.value, partition, offset, mutant.mutations))
    return Batch(target, fmt, tuple(records), seed, index)


# --- the child's side ---------------------------------------------------------------------------------------

_REASONS: frozenset[str] | None = None


def _reasons() -> frozenset[str]:
    global _REASONS  # noqa: PLW0603 - computed once per child process
    if _REASONS is None:
        from services.common.debezium.records import Reason

        _REASONS = frozenset(v for k, v in vars(Reason).items() if k.isupper())
    return _REASONS


def decode_and_account(batch: Batch, decoders: dict[tuple[str, str], Any]) -> Verdict:
    """Decode ``batch`` here and check that every record ended as exactly one row, failure or tombstone."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

    from services.common.kafka.message_columns import MessageBatch
    from tests.fuzz.targets import decoder

    if batch.target == SELF_TEST:
        return _self_test(batch)
    key = (batch.target, batch.fmt)
    if key not in decoders:
        decoders[key] = decoder(batch.target, batch.fmt)
    messages = [
        Message(
            topic=topic(batch.target),
            partition=r.partition,
            offset=r.offset,
            key=b'{"id":1}',
            value=r.value,
            headers=[("fuzz", b"1")],
            timestamp=(TIMESTAMP_CREATE_TIME, 1_796_193_462_000 + i),
        )
        for i, r in enumerate(batch.records)
    ]
    arguments = (topic(batch.target), MessageBatch.of(messages), 1_796_193_470_000_000)
    started = time.perf_counter()
    try:
        result = decoders[key].decode(*arguments)
    except BaseException:  # a Rust panic is a BaseException: nothing may escape decode()
        return Verdict("exception", traceback.format_exc(limit=12), time.perf_counter() - started)
    seconds = time.perf_counter() - started
    problems, outcomes = _account(batch, result, decoders[key].schema)
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        ("accounting", lambda: problems),
        ("sink", lambda: _through_the_sink(batch.target, result)),  # decoded, but would writing them end the writer?
    ]
    if batch.differential and batch.fmt != "avro-single-object":
        checks.append(
            ("differential", lambda: _differences(result, _general_decoder(batch, decoders).decode(*arguments)))
        )
    for kind, check in checks:
        try:
            found = check()
        except BaseException:
            return Verdict(kind, traceback.format_exc(limit=12), seconds, outcomes)
        if found:
            return Verdict(kind, "\n".join(found[:20]), seconds, outcomes)
    return Verdict("ok", "", seconds, outcomes)


def _general_decoder(batch: Batch, decoders: dict[tuple[str, str], Any]) -> Any:
    """The batch's decoder without the native reader: every value through Arrow's JSON reader."""
    from tests.fuzz.targets import decoder

    key = (batch.target, "json-general")
    if key not in decoders:
        decoders[key] = decoder(batch.target, batch.fmt)
        decoders[key]._fast = None  # what the decoder does when the native reader cannot take its schema
    return decoders[key]


def _same_value(mine: object, theirs: object) -> bool:
    """Equal values, a NaN equal to a NaN (in Arrow's equality, and Python's, a NaN equals nothing)."""
    if isinstance(mine, float) and isinstance(theirs, float) and math.isnan(mine) and math.isnan(theirs):
        return True
    if isinstance(mine, list) and isinstance(theirs, list):
        return len(mine) == len(theirs) and all(map(_same_value, mine, theirs))
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return mine.keys() == theirs.keys() and all(_same_value(mine[k], theirs[k]) for k in mine)
    return mine == theirs


def _column_values(table: Any, name: str) -> list[Any]:
    """A column's values, times as integers (a time out of Python's range has no Python value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(name)
    if pa.types.is_date32(column.type):
        column = pc.cast(column, pa.int32())
    elif pa.types.is_timestamp(column.type) or pa.types.is_time(column.type):
        column = pc.cast(column, pa.int64())
    values: list[Any] = column.to_pylist()
    return values


def _first_difference(mine: Any, theirs: Any, name: str) -> str | None:
    """Where a column of two tables of the same rows differs first (the first table's value, then the second's);
    None when its values are the same."""
    if not mine.column(name).type.equals(theirs.column(name).type):
        return f"types differ: {mine.column(name).type} != {theirs.column(name).type}"
    for index, (x, y) in enumerate(zip(_column_values(mine, name), _column_values(theirs, name), strict=True)):
        if not _same_value(x, y):
            where = (mine.column("_kafka_partition")[index].as_py(), mine.column("_kafka_offset")[index].as_py())
            return f"at {where}: {x!r:.200} != {y!r:.200}"
    return None


def _differing_columns(mine: Any, theirs: Any) -> list[str]:
    """``column: where it differs first`` for each column of two tables of the same rows whose values differ."""
    if mine.equals(theirs, check_metadata=False):  # nearly always: no value is looked at
        return []
    if mine.column_names != theirs.column_names or mine.num_rows != theirs.num_rows:
        return [f"columns or rows differ: {mine.column_names} / {theirs.column_names}"]
    found = [(name, _first_difference(mine, theirs, name)) for name in mine.column_names]
    return [f"column {name}: {where}" for name, where in found if where is not None]


def _differences(native: Any, general: Any) -> list[str]:
    """Where the two paths disagree: which records became rows, and the rows' values."""

    def landed(result: Any) -> set[tuple[int, int]]:
        rows = result.rows
        partitions, offsets = rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist()
        return set(zip(partitions, offsets, strict=True))

    native_rows, general_rows = landed(native), landed(general)
    problems = []
    if native_rows != general_rows:
        only_native, only_general = sorted(native_rows - general_rows), sorted(general_rows - native_rows)
        problems.append(f"rows only with the native reader: {only_native[:5]}; only without it: {only_general[:5]}")
        reasons = {(int(f.message.partition()), int(f.message.offset())): f.reason for f in general.failures}
        problems += [f"  {c}: without the native reader a failure, {reasons.get(c)}" for c in only_native[:3]]
        reasons = {(int(f.message.partition()), int(f.message.offset())): f.reason for f in native.failures}
        problems += [f"  {c}: with the native reader a failure, {reasons.get(c)}" for c in only_general[:3]]
        return problems
    order = [("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]
    return _differing_columns(native.rows.sort_by(order), general.rows.sort_by(order))  # either in batch order


class _MemoryLake:
    """The Lake protocol over a dict: what the sink writes, kept for reading back."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def write(self, path: str, data: bytes) -> Any:
        from services.common.lake import LakeFile

        self.files[path] = data
        return LakeFile(path, len(data), str(len(self.files)))

    def write_if(self, path: str, data: bytes, *, version: str | None) -> Any:
        return self.write(path, data)

    def read(self, path: str) -> bytes:
        return self.files[path]

    def list(self, prefix: str = "") -> Iterator[Any]:
        return iter([self.write(p, d) for p, d in sorted(self.files.items()) if p.startswith(prefix)])

    def delete(self, path: str) -> None:
        self.files.pop(path, None)

    def move(self, src: str, dst: str, *, version: str | None = None) -> Any:
        return self.write(dst, self.files.pop(src))

    def uri(self, path: str) -> str:
        return f"memory:///{path}"

    def exists(self, path: str) -> bool:
        return path in self.files

    def close(self) -> None:
        self.files.clear()


def _through_the_sink(target: str, result: Any) -> list[str]:
    """Write the rows as the writer does (Parquet, one file per hour folder) and read them back: the lake
    must hold exactly the decoded rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from services.consumer.sink import ParquetSink

    lake = _MemoryLake()
    sink = ParquetSink(lake, "fuzz")
    schema, table = target.split(".")
    problems = []
    for partition, rows in result.rows_by_partition().items():
        files = sink.write(schema, table, partition, rows)
        back = pa.concat_tables([pq.read_table(io.BytesIO(lake.read(f.file.path))) for f in files])
        order = [("_kafka_offset", "ascending")]
        if differing := _differing_columns(back.sort_by(order), rows.sort_by(order)):
            problems.append(f"partition {partition}: the Parquet files do not read back as the decoded rows")
            problems += [f"  {difference}" for difference in differing[:3]]
        if sum(f.rows for f in files) != rows.num_rows:
            problems.append(f"partition {partition}: {sum(f.rows for f in files)} rows written of {rows.num_rows}")
    return problems


SELF_TEST = "self-test"
"""A batch target that makes the child crash, hang or raise as its one value says: proves the harness sees it."""


def _self_test(batch: Batch) -> Verdict:
    import ctypes

    command = batch.records[0].value
    if command == b"segfault":
        ctypes.string_at(0)
    elif command == b"abort":
        os.abort()
    elif command == b"hang":
        time.sleep(3_600)
    elif command == b"raise":
        try:
            raise RuntimeError("raised on purpose")
        except RuntimeError:
            return Verdict("exception", traceback.format_exc())
    return Verdict("ok")


def _account(batch: Batch, result: Any, schema: Any) -> tuple[list[str], Counter[str]]:
    problems: list[str] = []
    expected = {(r.partition, r.offset): r for r in batch.records}
    rows = list(
        zip(
            result.rows.column("_kafka_partition").to_pylist(),
            result.rows.column("_kafka_offset").to_pylist(),
            strict=True,
        )
    )
    failures = [(int(f.message.partition()), int(f.message.offset())) for f in result.failures]
    outcomes = Counter({"rows": len(rows), "tombstones": result.tombstones})
    outcomes.update(f"failure:{f.reason}" for f in result.failures)
    for name, coordinates in (("rows", rows), ("failures", failures)):
        doubled = [c for c, n in Counter(coordinates).items() if n > 1]
        if doubled:
            problems.append(f"records in {name} more than once: {doubled[:5]}")
    both = set(rows) & set(failures)
    if both:
        problems.append(f"records both a row and a failure: {sorted(both)[:5]}")
    values = {c for c, r in expected.items() if r.value is not None}
    missing, extra = values - set(rows) - set(failures), (set(rows) | set(failures)) - values
    if missing:
        problems.append(f"records neither a row nor a failure: {sorted(missing)[:5]}")
    if extra:
        problems.append(f"rows or failures of no input record (or of a tombstone): {sorted(extra)[:5]}")
    tombstones = sum(1 for r in batch.records if r.value is None)
    if result.tombstones != tombstones:
        problems.append(f"{result.tombstones} tombstones counted, {tombstones} given")
    lost_controls = [c for c, r in expected.items() if r.control and c not in set(rows)]
    if lost_controls:
        problems.append(f"unmutated events that did not become rows: {lost_controls[:5]}")
    for failure in result.failures:
        where = (failure.message.partition(), failure.message.offset())
        if failure.reason not in _reasons():
            problems.append(f"failure {where} has an unknown reason {failure.reason!r}")
        record = expected.get(where)
        if record is not None and failure.message.value() != record.value:
            problems.append(f"failure {where} does not carry the original value (the DLQ needs it)")
    if not result.rows.schema.equals(schema):
        problems.append("the rows do not have the lake schema")
    try:
        result.rows.validate(full=True)
    except Exception as exc:
        problems.append(f"the rows are not valid Arrow data: {exc}")
    return problems, outcomes


def _serve(conn: Connection) -> None:
    """The child's loop: a batch in, a verdict out, until the parent closes the pipe."""
    decoders: dict[tuple[str, str], Any] = {}
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        conn.send(decode_and_account(batch, decoders))


# --- the parent's side ----------------------------------------------------------------------------------------


class Worker:
    """One child process that decodes batches; replaced when it dies or hangs."""

    def __init__(self) -> None:
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self.batch: Batch | None = None
        self.started = 0.0

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            self._start()
        assert self._conn is not None
        return self._conn

    def _start(self) -> None:
        parent, child = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, args=(child,), name="fuzz-decoder", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent

    def submit(self, batch: Batch) -> None:
        conn = self.conn
        self.batch, self.started = batch, time.monotonic()
        conn.send(batch)

    def collect(self) -> Verdict:
        """The verdict on the submitted batch once its connection is readable (or the child is gone)."""
        assert self._process is not None
        self.batch = None
        try:
            verdict: Verdict = self.conn.recv()
        except (EOFError, ConnectionResetError):
            self._process.join(5)
            code = self._process.exitcode
            self._reset()
            return Verdict("crash", f"the decoding process died (exit code {code}; negative: killed by that signal)")
        return verdict

    def overdue(self, limit_s: float) -> bool:
        return self.batch is not None and time.monotonic() - self.started > limit_s

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._reset()

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn, self.batch = None, None, None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the child's recv sees EOF and returns
        if self._process is not None:
            self._process.join(10)
        self.kill()

    def run(self, batch: Batch, limit_s: float = TIME_LIMIT_S) -> Verdict:
        """``batch`` alone, waiting for its verdict."""
        self.submit(batch)
        if self.conn.poll(limit_s):
            return self.collect()
        self.kill()
        return Verdict("hang", f"no verdict after {limit_s:.0f} s", limit_s)

    def replay(self, batch: Batch) -> Verdict:
        """A kept crasher (a few records): it must decode, account for every record, and do so quickly."""
        verdict = self.run(batch, max(SLOW_S * 2, 10.0))
        if verdict.ok and verdict.seconds > SLOW_S:
            return Verdict("hang", f"took {verdict.seconds:.1f} s", verdict.seconds, verdict.outcomes)
        return verdict


@contextmanager
def workers(count: int) -> Iterator[list[Worker]]:
    pool = [Worker() for _ in range(count)]
    try:
        yield pool
    finally:
        for worker in pool:
            worker.close()


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    batch: Batch  # minimised
    original_size: int


@dataclass
class Campaign:
    seed: int
    batches: int = 0
    records: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    mutations: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"seed={self.seed} batches={self.batches} records={self.records} in {self.seconds:.0f} s "
            f"(slowest batch {self.slowest_s:.2f} s); formats: {dict(self.formats)}; outcomes: {reasons}; "
            f"mutation kinds: {len(self.mutations)}; findings: {len(self.findings)}"
        )


def run_campaign(
    seed: int,
    seconds: float,
    jobs: int = 2,
    *,
    limit_s: float = TIME_LIMIT_S,
    on_finding: Callable[[Finding], None] | None = None,
    max_findings: int = 5,
    minimise_budget_s: float = 90.0,
    avoid: frozenset[str] = frozenset(),
    differential: bool = False,
) -> Campaign:
    """Batches ``0, 1, 2, …`` of ``seed`` for about ``seconds``; each failing batch is minimised.

    ``avoid`` leaves out the mutants of the named mutations, by family (``unknown_column``) or in full
    (``unknown_column:payload``): a known finding that is not fixed yet would otherwise be found again and
    again."""
    seeds = load_seeds()
    campaign = Campaign(seed)
    began = time.monotonic()
    deadline = began + seconds
    next_index = 0
    with workers(jobs) as pool:
        while True:
            for worker in pool:
                if worker.batch is None and time.monotonic() < deadline:
                    built = dataclasses.replace(build_batch(seed, next_index, seeds), differential=differential)
                    worker.submit(_without(built, avoid))
                    next_index += 1
            busy = [w for w in pool if w.batch is not None]
            if not busy:
                break
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=1.0)
            for worker in busy:
                batch = worker.batch
                assert batch is not None
                if worker.conn in ready:
                    verdict = worker.collect()
                elif worker.overdue(limit_s):
                    worker.kill()
                    verdict = Verdict("hang", f"no verdict after {limit_s:.0f} s", limit_s)
                else:
                    continue
                _tally(campaign, batch, verdict)
                if not verdict.ok:
                    finding = minimise(batch, verdict, limit_s=limit_s, budget_s=minimise_budget_s)
                    campaign.findings.append(finding)
                    if on_finding is not None:
                        on_finding(finding)
                    if len(campaign.findings) >= max_findings:
                        deadline = 0.0
    campaign.seconds = time.monotonic() - began
    return campaign


def _without(batch: Batch, avoid: frozenset[str]) -> Batch:
    if not avoid:
        return batch
    kept = [r for r in batch.records if not any(m in avoid or m.split(":")[0] in avoid for m in r.mutations)]
    return batch.subset(kept)


def _tally(campaign: Campaign, batch: Batch, verdict: Verdict) -> None:
    campaign.batches += 1
    campaign.records += len(batch.records)
    campaign.formats[batch.fmt] += 1
    campaign.outcomes.update(verdict.outcomes)
    campaign.slowest_s = max(campaign.slowest_s, verdict.seconds)
    for record in batch.records:
        campaign.mutations.update(name.split(":")[0] for name in record.mutations)


# --- minimising and keeping crashers ----------------------------------------------------------------------


def minimise(batch: Batch, verdict: Verdict, *, limit_s: float = TIME_LIMIT_S, budget_s: float = 90.0) -> Finding:
    """The fewest records that still fail the same way, found by halving and then one record at a time
    (cheap: a few child runs; what is left when the budget runs out is kept as it is)."""
    deadline = time.monotonic() + budget_s
    worker = Worker()
    current, current_verdict = batch, verdict
    try:

        def fails(candidate: Batch) -> Verdict | None:
            found = worker.run(candidate, limit_s)
            if verdict.kind == "hang" and found.ok and found.seconds >= SLOW_S:  # slow alone: still the cause
                return Verdict("hang", f"{len(candidate.records)} record(s) took {found.seconds:.1f} s", found.seconds)
            return found if found.kind == verdict.kind else None

        while len(current.records) > 1 and time.monotonic() < deadline:
            middle = len(current.records) // 2
            halves = [current.subset(current.records[:middle]), current.subset(current.records[middle:])]
            for half in halves:
                if (found := fails(half)) is not None:
                    current, current_verdict = half, found
                    break
            else:
                break
        if len(current.records) > 1:
            suspects = [r for r in current.records if not r.control and r.value is not None]
            for record in suspects:
                if time.monotonic() >= deadline:
                    break
                alone = current.subset([record])
                if (found := fails(alone)) is not None:
                    current, current_verdict = alone, found
                    break
    finally:
        worker.close()
    return Finding(current_verdict, current, len(batch.records))


def _pack(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(zlib.compress(value, 9)).decode()


def _unpack(text: str | None) -> bytes | None:
    return None if text is None else zlib.decompress(base64.b64decode(text))


def save_crasher(finding: Finding, directory: Path = CRASHERS) -> Path:
    """The finding as ``<kind>-<digest>.json``: enough to replay it and to say what it found."""
    batch = finding.batch
    records = [
        {
            "partition": r.partition,
            "offset": r.offset,
            "value_zlib_b64": _pack(r.value),
            "mutations": list(r.mutations),
            "control": r.control,
        }
        for r in batch.records
    ]
    digest = hashlib.sha256(json.dumps([batch.target, batch.fmt, records]).encode()).hexdigest()[:12]
    document = {
        "found": finding.verdict.kind,
        "detail": finding.verdict.detail[-3000:],
        "target": batch.target,
        "format": batch.fmt,
        "seed": batch.seed,
        "batch": batch.index,
        "original_records": finding.original_size,
        "differential": batch.differential,
        "records": records,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{finding.verdict.kind}-{digest}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def load_crasher(path: Path) -> Batch:
    document = json.loads(path.read_text())
    records = tuple(
        Record(_unpack(r["value_zlib_b64"]), r["partition"], r["offset"], tuple(r["mutations"]), r["control"])
        for r in document["records"]
    )
    differential = bool(document.get("differential", False))
    return Batch(document["target"], document["format"], records, document["seed"], document["batch"], differential)
