"""A lake file read for loading (services/warehouse/lakefile.py, parquet_pages.py): hostile files are read or
refused, never crash the reader."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.common.contracts import lake_schema
from services.common.lake import LocalLake
from services.common.settings import repo_root
from services.warehouse.errors import FileAheadOfContractError
from services.warehouse.lakefile import read_lake_file
from services.warehouse.parquet_pages import MalformedParquetError, declared_page_bytes
from tests.fixtures.lakefiles import LakeFiles, lending_contract


@pytest.fixture
def lake(tmp_path: Path) -> LocalLake:
    return LocalLake(tmp_path / "lake")


_MUTATE_AND_READ = """
import json, random, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a file that makes the reader allocate without end fails
from services.warehouse.lakefile import read_lake_file
from services.warehouse.errors import CorruptFileError, EarlierTypeError, FileAheadOfContractError
from tests.fixtures.lakefiles import lending_contract

real = open(sys.argv[1], "rb").read()
footer = len(real) - 8 - int.from_bytes(real[-8:-4], "little")
rng = random.Random(int(sys.argv[2]))
outcomes, escaped = {"read": 0, "refused": 0, "waits": 0, "stops": 0}, []
for attempt in range(int(sys.argv[3])):
    data = bytearray(real)
    if attempt % 5 == 0:
        del data[rng.randrange(1, len(data)):]
    in_footer = attempt % 2 and len(data) > footer + 8
    for _ in range(rng.choice([1, 2, 4])):
        at = rng.randrange(footer, len(data) - 8) if in_footer else rng.randrange(len(data))
        data[at] = rng.choice([0x00, 0x7F, 0x80, 0xFF, rng.randrange(256), data[at] ^ 1 << rng.randrange(8)])
    try:
        read_lake_file(bytes(data), f"mutation-{attempt}", lending_contract("transactions"))
        outcomes["read"] += 1
    except CorruptFileError:
        outcomes["refused"] += 1
    except FileAheadOfContractError:  # its stamped version grew: the loader waits for that contract
        outcomes["waits"] += 1
    except EarlierTypeError:  # its stamped version shrank and a column no longer fits: the table stops
        outcomes["stops"] += 1
    except BaseException as exc:
        escaped.append(f"mutation {attempt}: {type(exc).__name__}: {exc}"[:300])
print(json.dumps({**outcomes, "escaped": escaped}))
"""


def test_mutated_lake_files_are_read_or_refused_and_never_crash_the_reader(lake: LocalLake) -> None:
    """Truncations and byte flips of a real lake file, many of them in its footer: each one is read or
    refused as corrupt. Run in a child with a bounded address space: an abort or a runaway allocation in a
    native reader fails this test instead of ending the test run or the machine's memory."""
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 300))
    real = next(lake.root.rglob("*.parquet"))
    child = subprocess.run(
        [sys.executable, "-c", _MUTATE_AND_READ, str(real), "2026", "600"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert child.returncode == 0, f"the reader died ({child.returncode}): {child.stderr[-2000:]}"
    outcome = json.loads(child.stdout)
    assert outcome["escaped"] == []
    assert outcome["refused"] > 300  # most mutations break the file; the others change values Parquet cannot see


def test_the_pages_a_lake_file_declares_are_read_without_pyarrow(lake: LocalLake) -> None:
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 2_000))
    data = next(lake.root.rglob("*.parquet")).read_bytes()
    footer = pq.read_metadata(io.BytesIO(data))
    chunks = [footer.row_group(g).column(c) for g in range(footer.num_row_groups) for c in range(footer.num_columns)]
    # the footer's totals count the page headers too, which are not decompressed
    assert 0 < declared_page_bytes(data) <= sum(c.total_uncompressed_size for c in chunks)
    assert declared_page_bytes(data) > sum(c.total_uncompressed_size for c in chunks) * 0.9


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda data: data[: len(data) - 1], "magic"),
        (lambda data: data[:-8] + (len(data)).to_bytes(4, "little") + b"PAR1", "a footer of"),
        (lambda data: data[:-8] + (100 << 20).to_bytes(4, "little") + b"PAR1", "a footer of"),
        (lambda data: data[:4] + b"\xff" * 64 + data[68:], "wire type|page header|runs past"),
    ],
    ids=["truncated", "footer-longer-than-file", "footer-100MiB", "garbage-page-header"],
)
def test_pages_that_cannot_be_accounted_for_are_malformed(
    lake: LocalLake, damage: Callable[[bytes], bytes], says: str
) -> None:
    LakeFiles(lake, lending_contract("transactions")).write(range(0, 10))
    data = next(lake.root.rglob("*.parquet")).read_bytes()
    with pytest.raises(MalformedParquetError, match=says):
        declared_page_bytes(damage(data))


def test_a_file_of_a_newer_contract_version_waits_and_is_not_read_without_its_columns(lake: LocalLake) -> None:
    """Read with an older contract, a file would lose the columns its version added: it waits, named."""
    contract = lending_contract("transactions")
    newer = replace(contract, version=contract.version + 1)
    (written,) = LakeFiles(lake, newer).write(range(3))
    path = written.file.path
    data = lake.read(path)
    assert read_lake_file(data, path, newer).num_rows == 3
    with pytest.raises(FileAheadOfContractError, match=f"written under contract version {newer.version}, newer"):
        read_lake_file(data, path, contract)


_READ_SHORT_OF_MEMORY = """
import resource, sys
from services.warehouse.lakefile import read_lake_file
from services.warehouse.errors import CorruptFileError, LoadOutOfMemoryError
from tests.fixtures.lakefiles import lending_contract

data = open(sys.argv[1], "rb").read()
contract = lending_contract("transactions")
mapped = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) << 10
resource.setrlimit(resource.RLIMIT_AS, (mapped + (160 << 20), mapped + (160 << 20)))
try:
    read_lake_file(data, "short.parquet", contract)
    print("read")
except LoadOutOfMemoryError as exc:
    print("waits", exc)
except CorruptFileError as exc:
    print("refused", exc)
"""


def test_memory_running_out_while_a_file_is_read_is_not_the_files_fault(tmp_path: Path) -> None:
    """A sound file whose rows need more memory than there is: pyarrow's allocation failure was taken for a file
    not readable as Parquet, and the file was set aside in _failed/ for good. Now its table waits."""
    contract = lending_contract("transactions")
    rows = 500_000
    columns = {f.name: pa.nulls(rows, f.type) for f in lake_schema(contract)}
    columns["_kafka_topic"] = pa.array(["cdcflow.lending.transactions"] * rows)
    columns["_kafka_partition"] = pa.array([0] * rows, pa.int32())
    columns["_kafka_offset"] = pa.array(range(rows), pa.int64())
    long = "r" * 2_000  # one value, stored once: 1 GB once every row holds its own
    columns["reference"] = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([long]))
    path = tmp_path / "short.parquet"
    pq.write_table(pa.table(columns), path)
    done = subprocess.run(
        [sys.executable, "-c", _READ_SHORT_OF_MEMORY, str(path)],
        capture_output=True,
        text=True,
        cwd=repo_root(),
        timeout=120,
        check=False,
    )
    assert done.stdout.startswith("waits short.parquet: reading it ran out of memory"), done.stdout + done.stderr
