"""The loader's cycle with a large lake: 10,000 and 100,000 files already loaded, archiving on and off.

The claim under test: with archiving on, a cycle's cost does not grow with the files already loaded (they
are under the archive prefix, out of the listing). With archiving off every loaded file stays in place, so
each cycle lists and checks all of them.

For each size, small lake files of one table are laid down in the writer's layout by the writer's own
decoder and Parquet sink (6 partitions, 10 files per partition and hour, 10 rows a file) and loaded by the
real loader, archiving off. Then a fresh loader process (so its peak RSS is its own) runs with archiving off:
a first cycle, three cycles with nothing new, then three cycles each after a few new files were written
(medians, wall and CPU seconds). Then the same with archiving on, whose first cycle moves every file loaded
so far to the archive — the state a loader that archived all along leaves. A small lake, measured the same
way in the same run, is the baseline; the run ends by checking that every file is in bronze once and
archived. Prints one JSON line.

    .venv/bin/python -m bench.lake_scale_bench [--files 10000 100000] [--baseline-files 100] [--new-files 10]
        [--state-dir DIR]   # keep each built and loaded lake there; the next run copies it instead of rebuilding
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import CollectorRegistry

from services.common.debezium.json_batch import JsonEventDecoder
from services.common.kafka.message_columns import MessageBatch
from services.common.lake import Lake, LakeFile, LocalLake, validate_relative_path
from services.common.logging import configure_logging
from services.common.metrics import LoaderMetrics
from services.common.settings import LoaderSettings, LogSettings
from services.common.signals import Shutdown
from services.consumer.sink import ParquetSink
from services.loader.app import CycleReport, Loader
from services.warehouse.duckdb import DuckDBWarehouse
from tests.fixtures.lakefiles import PREFIX, lending_contract, transaction_event

ARCHIVE = "_archive"
_BUILT = "built.json"  # in a kept state: how long building it took
PARTITIONS = 6
FILES_PER_HOUR = 10  # per partition: one flush every six minutes
ROWS_PER_FILE = 10
CYCLES = 3  # timed cycles of each kind (the median is reported)
_CHUNK_FILES = 500  # files of one partition decoded together
_BASE_US = 1_794_999_600_000_000  # on an hour: a slot's files share one folder
_HOUR_US = 3_600_000_000


@dataclass(frozen=True, slots=True)
class Slot:
    """The ``index``-th file of the lake (0-based, over every partition): where it goes and what it holds."""

    index: int

    @property
    def partition(self) -> int:
        return self.index % PARTITIONS

    @property
    def nth(self) -> int:
        """Its place among its partition's files."""
        return self.index // PARTITIONS

    @property
    def offsets(self) -> range:
        return range(self.nth * ROWS_PER_FILE, (self.nth + 1) * ROWS_PER_FILE)

    @property
    def ts_us(self) -> int:
        """Source time of its rows: ``FILES_PER_HOUR`` consecutive files of a partition share an hour."""
        hour, within = divmod(self.nth, FILES_PER_HOUR)
        return _BASE_US + hour * _HOUR_US + within * (_HOUR_US // FILES_PER_HOUR)


class UnsyncedLake(LocalLake):
    """The local lake without its fsyncs and temp files, to lay 100,000 files down quickly: the names,
    bytes and versions (modification times) are what :class:`LocalLake` writes; only durability is left out."""

    def write(self, path: str, data: bytes) -> LakeFile:
        target = self.root.joinpath(*validate_relative_path(path).split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return LakeFile(path=path, size=len(data), version=str(target.stat().st_mtime_ns))


def lay_down(lake: Lake, first: int, count: int) -> int:
    """Write lake files ``first`` … ``first + count - 1`` as the writer would; returns how many were written."""
    contract = lending_contract("transactions")
    sink = ParquetSink(lake, PREFIX)
    written = 0
    for partition in range(PARTITIONS):
        slots = [Slot(i) for i in range(first, first + count) if i % PARTITIONS == partition]
        for start in range(0, len(slots), _CHUNK_FILES):
            chunk = slots[start : start + _CHUNK_FILES]
            rows = _decoded(chunk, partition)
            for n, _ in enumerate(chunk):  # one flush per file: rows of one partition and hour
                files = sink.write(
                    contract.schema, contract.table, partition, rows.slice(n * ROWS_PER_FILE, ROWS_PER_FILE)
                )
                written += len(files)
    return written


def _decoded(slots: Sequence[Slot], partition: int) -> pa.Table:
    """The rows of ``slots`` (one partition, in offset order) decoded by the writer's decoder in one batch."""
    contract = lending_contract("transactions")
    topic = f"{PREFIX}.{contract.schema}.{contract.table}"
    messages = [
        Message(
            topic=topic,
            partition=partition,
            offset=offset,
            key=json.dumps({"transaction_id": offset}).encode(),
            value=transaction_event(offset, ts_us=slot.ts_us),
            timestamp=(TIMESTAMP_CREATE_TIME, slot.ts_us // 1000),
        )
        for slot in slots
        for offset in slot.offsets
    ]
    result = JsonEventDecoder(contract).decode(topic, MessageBatch.of(messages), ingested_at_us=_BASE_US)
    if result.failures:
        raise SystemExit(f"the decoder refused the bench's events: {result.failures[:3]}")
    return result.rows


def bench_loader(base: Path, settings: LoaderSettings, on_loaded: Callable[[str], None] | None = None) -> Loader:
    """The real loader over the lake in ``base/lake`` and the DuckDB file ``base/wh.duckdb``."""
    return Loader(
        settings,
        topic_prefix=PREFIX,
        lake=LocalLake(base / "lake"),
        warehouse=DuckDBWarehouse(base / "wh.duckdb"),
        metrics=LoaderMetrics(CollectorRegistry()),
        shutdown=Shutdown(),
        on_loaded=on_loaded,
    )


@dataclass(frozen=True, slots=True)
class Timed:
    """One cycle: wall seconds, CPU seconds of the whole process (DuckDB's threads included), its report."""

    wall_s: float
    cpu_s: float
    report: CycleReport


def timed_cycle(loader: Loader) -> Timed:
    wall, cpu = time.perf_counter(), time.process_time()
    report = loader.cycle()
    return Timed(time.perf_counter() - wall, time.process_time() - cpu, report)


def measure(base: Path, archive_prefix: str, first_new: int, new_files: int) -> dict[str, float]:
    """One loader process's cycles over the lake in ``base`` (run in a child process: its RSS is its own)."""
    loader = bench_loader(base, LoaderSettings(archive_prefix=archive_prefix))
    first = timed_cycle(loader)
    idle = [timed_cycle(loader) for _ in range(CYCLES)]
    if first.report.files or any(cycle.report.files for cycle in idle):
        raise SystemExit(f"files were pending before the measurement: {first}, {idle}")
    new = [_new_files_cycle(loader, base, first_new + n * new_files, new_files) for n in range(CYCLES)]
    return {
        "first_cycle_s": round(first.wall_s, 3),
        "idle_cycle_s": median(cycle.wall_s for cycle in idle),
        "idle_cycle_cpu_s": median(cycle.cpu_s for cycle in idle),
        "new_files_cycle_s": median(cycle.wall_s for cycle in new),
        "new_files_cycle_cpu_s": median(cycle.cpu_s for cycle in new),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 4)


def _new_files_cycle(loader: Loader, base: Path, first: int, count: int) -> Timed:
    """Lay down ``count`` new files, then time the cycle that loads them."""
    lay_down(LocalLake(base / "lake"), first, count)
    cycle = timed_cycle(loader)
    if cycle.report.files != count or cycle.report.rows_inserted != count * ROWS_PER_FILE:
        raise SystemExit(f"the loader lost or doubled files: wrote {count}, loaded {cycle.report}")
    return cycle


@dataclass(frozen=True, slots=True)
class Point:
    """The figures of one lake size."""

    files_loaded: int
    lay_down_s: float
    initial_load_s: float
    archive_off: dict[str, float]
    archive_on: dict[str, float]


def _child(base: Path, archive_prefix: str, first_new: int, new_files: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "bench.lake_scale_bench",
        "--measure",
        str(base),
        "--archive-prefix",
        archive_prefix,
    ]
    command += ["--first-new", str(first_new), "--new-files", str(new_files)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the measuring loader failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _point(base: Path, files: int, new_files: int, state_dir: Path | None) -> Point:
    built = _loaded_lake(base, files, state_dir)
    added = CYCLES * new_files  # by each measuring process
    off = _child(base, "", files, new_files)
    on = _child(base, ARCHIVE, files + added, new_files)
    _check_final(base, files + 2 * added)
    return Point(files, built["lay_down_s"], built["initial_load_s"], off, on)


def _loaded_lake(base: Path, files: int, state_dir: Path | None) -> dict[str, float]:
    """Lay down ``files`` files in ``base`` and load them, archiving off; with ``state_dir``, the result is
    kept there and copied (modification times, so versions, included) by the next run instead of rebuilt."""
    kept = state_dir / f"{files}-files" if state_dir else None
    if kept is not None and (kept / _BUILT).is_file():
        shutil.copytree(kept, base, dirs_exist_ok=True)
        built: dict[str, float] = json.loads((base / _BUILT).read_text())
        return built
    began = time.perf_counter()
    if lay_down(UnsyncedLake(base / "lake"), 0, files) != files:
        raise SystemExit(f"could not lay down {files} files")
    lay_down_s = time.perf_counter() - began
    began = time.perf_counter()
    report = bench_loader(base, LoaderSettings(archive_prefix="")).cycle()
    if report.files != files:
        raise SystemExit(f"the initial load took {report.files} of {files} files")
    built = {"lay_down_s": round(lay_down_s, 1), "initial_load_s": round(time.perf_counter() - began, 1)}
    if kept is not None:
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(base, kept)
        (kept / _BUILT).write_text(json.dumps(built))  # last: a half-copied state is never reused
    return built


def _check_final(base: Path, files: int) -> None:
    """Every file loaded once, its rows in bronze once, and every one of them archived."""
    lake = LocalLake(base / "lake")
    in_place = sum(1 for _ in lake.list(f"{PREFIX}/"))
    archived = sum(1 for _ in lake.list(f"{ARCHIVE}/{PREFIX}/"))
    with duckdb.connect(str(base / "wh.duckdb"), read_only=True) as conn:
        found = conn.execute(
            "select (select count(*) from bronze.lending__transactions),"
            " (select count(*) from bronze._cdcflow_load_manifest)"
        ).fetchone()
    if (in_place, archived, found) != (0, files, (files * ROWS_PER_FILE, files)):
        raise SystemExit(f"end state: {in_place} in place, {archived} archived, bronze rows and manifest {found}")


def _sizes(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    yield "baseline", args.baseline_files
    for files in args.files:
        yield str(files), files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--baseline-files", type=int, default=100)
    parser.add_argument("--new-files", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, help="keep each lake built and loaded here, reuse it next run")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--archive-prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--first-new", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging(LogSettings(level="WARNING"))
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.archive_prefix, args.first_new, args.new_files)))
        return
    points: dict[str, Point] = {}
    for name, files in _sizes(args):
        with tempfile.TemporaryDirectory(prefix="cdcflow-lake-bench-") as folder:
            points[name] = _point(Path(folder), files, args.new_files, args.state_dir)
        print(f"{name}: {asdict(points[name])}", file=sys.stderr, flush=True)
    print(json.dumps(_summary(points)))


def _summary(points: dict[str, Point]) -> dict[str, object]:
    base = points["baseline"]
    out: dict[str, object] = {name: asdict(point) for name, point in points.items()}
    for name, point in points.items():
        if name == "baseline":
            continue
        for mode in ("archive_off", "archive_on"):
            mine, theirs = getattr(point, mode), getattr(base, mode)
            out[f"{name}_{mode}_vs_baseline"] = {
                key: round(float(mine[key]) / max(float(theirs[key]), 1e-6), 2)
                for key in ("idle_cycle_s", "idle_cycle_cpu_s", "new_files_cycle_s", "new_files_cycle_cpu_s")
            }
    return out


if __name__ == "__main__":
    main()
