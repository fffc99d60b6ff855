"""The enricher's table store: LMDB against RocksDB (rocksdict) on the enricher's own access pattern.

Writes ``--rows`` table versions in batches, each batch with the topic offsets in the same atomic write
(LMDB: one write transaction; RocksDB: one WriteBatch), then as many point reads of a key's version list.

    .venv/bin/python -m bench.enricher_store_bench --rows 200000
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import msgpack
import rocksdict

__all__ = ["main"]

_BATCH = 1_000


def _lmdb(path: Path, rows: int, keys: int) -> tuple[float, float]:
    env = lmdb.open(str(path), map_size=1 << 32, max_dbs=4, sync=True)
    versions, offsets = env.open_db(b"versions"), env.open_db(b"offsets")
    started = time.process_time()
    for first in range(0, rows, _BATCH):
        with env.begin(write=True) as txn:
            for n in range(first, min(rows, first + _BATCH)):
                key = b"c" + (n % keys).to_bytes(8, "big")
                old = txn.get(key, db=versions)
                txn.put(key, _merge(old, n), db=versions)
            txn.put(b"customers/0", msgpack.packb([first + _BATCH, first]), db=offsets)
    write_s = time.process_time() - started
    started = time.process_time()
    with env.begin() as txn:
        for n in _probe(rows, keys):
            msgpack.unpackb(txn.get(b"c" + n.to_bytes(8, "big"), db=versions))
    read_s = time.process_time() - started
    env.close()
    return write_s, read_s


def _rocks(path: Path, rows: int, keys: int) -> tuple[float, float]:
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
    started = time.process_time()
    for first in range(0, rows, _BATCH):
        batch = rocksdict.WriteBatch(raw_mode=True)
        for n in range(first, min(rows, first + _BATCH)):
            key = b"c" + (n % keys).to_bytes(8, "big")
            batch.put(key, _merge(db.get(key), n))  # reads the committed state, as the store would
        batch.put(b"o:customers/0", msgpack.packb([first + _BATCH, first]))
        db.write(batch, rocksdict.WriteOptions())
    db.flush()
    write_s = time.process_time() - started
    started = time.process_time()
    for n in _probe(rows, keys):
        msgpack.unpackb(db[b"c" + n.to_bytes(8, "big")])
    read_s = time.process_time() - started
    db.close()
    return write_s, read_s


def _merge(old: bytes | None, lsn: int) -> bytes:
    versions = msgpack.unpackb(old) if old else []
    versions.append([lsn, lsn, "u", {"status": "ACTIVE", "customer_type": "SME"}])
    packed: bytes = msgpack.packb(versions[-8:])
    return packed


def _probe(rows: int, keys: int) -> list[int]:
    rng = random.Random(7)  # noqa: S311 - a repeatable probe order, not a secret
    return [rng.randrange(min(rows, keys)) for _ in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    engines: dict[str, Callable[[Path, int, int], tuple[float, float]]] = {"lmdb": _lmdb, "rocksdict": _rocks}
    for name, run in engines.items():
        folder = Path(tempfile.mkdtemp(prefix=f"store-bench-{name}-"))
        try:
            write_s, read_s = run(folder / "db", args.rows, args.keys)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(
            f"{name:9s} write {args.rows / write_s:>10,.0f} versions/CPU-s  "
            f"read {args.rows / read_s:>10,.0f} lookups/CPU-s  ({args.rows:,} versions, {args.keys:,} keys)"
        )


if __name__ == "__main__":
    main()
