"""The crash-loop guard: a record that kills the decoding process costs that record, not the pipeline.

A native crash (a segfault, an abort, the kernel's OOM killer, the decode watchdog's SIGALRM) cannot be caught:
the process ends before the commit and, restarted, meets the same record again. So:

1. Before decoding what a poll fetched, the writer notes the offsets in hand (per topic and partition, first and
   last) in a small file of its own under ``<writer state dir>/<group>/`` and empties it once they are decoded.
   The file is written without fsync: a process crash does not lose the page cache, only a host crash would,
   and that is no decoder's fault. Each writer holds an exclusive lock on its note while it lives, so the lock
   tells a dead writer's note from a live one's, whatever the process ids.
2. A writer starting finds the notes of dead writers of its group. A note that is not empty means its writer
   died while decoding those offsets: they are read again with a plain assigned consumer (no group) and decoded
   in an isolated child process, first together and, if that kills the child, record by record. A record whose
   decoding alone kills the child (or outlasts the time limit) goes to the DLQ (``decoder_crash``) with its
   original key, value, headers and timestamp.
3. Once the DLQ has acknowledged it, its coordinates are appended to ``quarantined.jsonl`` (fsync'd: it is rare
   and must not be lost), and only then is the note removed. The group consumer leaves quarantined records out
   of decoding when it reads them again, so each is in the DLQ once. (A crash between the DLQ's acknowledgement
   and the fsync would put the record in the DLQ twice: the window is one write.)

Offsets the group has committed since the crash (another member decoded them) are not examined again.

Its length (past the ~400 lines of most modules): the note, the quarantine file and the search in child
processes are the three halves of one protocol whose invariants refer to each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from services.common.debezium.records import DecodeFailure, Reason
from services.common.errors import TransientError
from services.common.kafka import KafkaException, Message, TopicPartition, consumer
from services.common.kafka.message_columns import MessageBatch
from services.common.logging import get_logger
from services.common.settings import Settings
from services.consumer.faults import crash_if_marked
from services.consumer.guard import is_native_panic
from services.consumer.routing import EventDecoder

__all__ = [
    "DeadNote",
    "DecodeWatchdog",
    "InflightNote",
    "Quarantine",
    "Range",
    "crash_failure",
    "dead_notes",
    "find_crashers",
    "read_range",
]

log = get_logger(__name__)

Range = tuple[str, int, int, int]
"""``(topic, partition, first offset, last offset)``, both ends included."""
Coordinate = tuple[str, int, int]

_NOTE_GLOB = "inflight-*.note"
_QUARANTINE_FILE = "quarantined.jsonl"
_READ_TIMEOUT_S = 60.0
_CHILD_START_S = 120.0
_NO_TIMEOUT_BACKSTOP_S = 600.0


# --- this writer's note ---------------------------------------------------------------------------------


class InflightNote:
    """This process's note of the offsets being decoded; locked for as long as the process lives."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"inflight-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging = directory / f".{name}.tmp"
        self._fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # locked before it can be found: a writer starting next door never takes a live note for a dead one
        self.path = directory / f"{name}.note"
        os.rename(staging, self.path)
        self._noted = False

    def note(self, ranges: list[Range]) -> None:
        data = json.dumps(ranges, separators=(",", ":")).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        self._noted = True

    def clear(self) -> None:
        if self._noted:
            os.ftruncate(self._fd, 0)
            self._noted = False

    def close(self) -> None:
        """A clean end: the note goes (a crash leaves it, locked by nobody)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)


@dataclass
class DeadNote:
    """A note whose writer is gone, locked by this process until it is :meth:`done`."""

    path: Path
    ranges: list[Range]
    fd: int

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def release(self) -> None:
        """Leave the note for a later start (its records could not be examined now)."""
        os.close(self.fd)


def dead_notes(directory: Path) -> list[DeadNote]:
    """Notes of writers that died (their lock is free); empty ones are removed on the way."""
    found = []
    for path in sorted(directory.glob(_NOTE_GLOB)):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # another writer starting took it first
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its writer is alive, or another writer starting examines it
            os.close(fd)
            continue
        if not _still_named(fd, path):  # examined and removed by another writer between the open and the lock
            os.close(fd)
            continue
        note = DeadNote(path, _ranges(os.pread(fd, 1 << 20, 0)), fd)
        if note.ranges:
            found.append(note)
        else:
            note.done()
    return found


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _ranges(data: bytes) -> list[Range]:
    if not data:
        return []
    try:
        return [(str(t), int(p), int(a), int(b)) for t, p, a, b in json.loads(data)]
    except (ValueError, TypeError):
        log.warning("writer.note_unreadable", data=data[:200].decode(errors="replace"))
        return []


# --- the quarantined records ------------------------------------------------------------------------------


class Quarantine:
    """Coordinates of records that killed a decoder: already in the DLQ, never decoded again by this group."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / _QUARANTINE_FILE
        self._coordinates: set[Coordinate] = set()
        self._by_topic: dict[str, dict[int, np.ndarray]] = {}  # topic → partition → quarantined offsets
        self._seen: tuple[int, int] | None = None
        self.refresh()

    def __contains__(self, coordinate: object) -> bool:
        return coordinate in self._coordinates

    def __len__(self) -> int:
        return len(self._coordinates)

    def refresh(self) -> None:
        """Read the file again if it changed (another writer of the group on this host may add to it)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        if self._seen == (stat.st_size, stat.st_mtime_ns):
            return
        self._seen = (stat.st_size, stat.st_mtime_ns)
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = json.loads(line)
                self._add((str(entry["topic"]), int(entry["partition"]), int(entry["offset"])))

    def add(self, coordinates: list[Coordinate]) -> None:
        """Remember durably (fsync'd) before the note that led here is removed."""
        lines = "".join(
            json.dumps({"topic": t, "partition": p, "offset": o}, separators=(",", ":")) + "\n"
            for t, p, o in coordinates
        )
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
        for coordinate in coordinates:
            self._add(coordinate)

    def _add(self, coordinate: Coordinate) -> None:
        if coordinate in self._coordinates:
            return
        self._coordinates.add(coordinate)
        topic, partition, offset = coordinate
        partitions = self._by_topic.setdefault(topic, {})
        partitions[partition] = np.append(partitions.get(partition, np.empty(0, dtype=np.int64)), offset)

    def without_quarantined(self, topic: str, batch: MessageBatch) -> MessageBatch:
        """``batch`` less its quarantined records (the batch itself when it has none, the usual case)."""
        partitions = self._by_topic.get(topic)
        if partitions is None:
            return batch
        dropped = np.zeros(len(batch), dtype=bool)
        for partition, offsets in partitions.items():
            dropped |= (batch.partitions == partition) & np.isin(batch.offsets, offsets)
        keep = ~dropped
        return batch if keep.all() else batch.take(np.flatnonzero(keep))


# --- the decode watchdog ----------------------------------------------------------------------------------


class DecodeWatchdog:
    """A decode that takes longer than ``timeout_s`` is a hang: the kernel ends the process (SIGALRM).

    A hang can hold the GIL (a huge integer power in C), so no Python thread or handler could act on it; the
    default action of SIGALRM needs neither. The note of the offsets in hand survives, and the next start
    finds the record. Only a writer that owns its process (the main thread of ``python -m services.consumer``)
    arms it: a writer embedded in another program (the demo) must not end its host.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self.armed = timeout_s > 0 and threading.current_thread() is threading.main_thread()
        if self.armed:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        if not self.armed:
            yield
            return
        signal.setitimer(signal.ITIMER_REAL, self._timeout_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


# --- reading the records again ----------------------------------------------------------------------------


def read_range(settings: Settings, group_id: str, span: Range) -> list[Message]:
    """The records ``first..last`` of one partition, read with an assigned consumer that never commits."""
    topic, partition, first, last = span
    # the group's id only to read its committed offset: assigned, never subscribed, it does not join the group
    client = consumer(settings.kafka, group_id, **{"enable.partition.eof": True})
    found: list[Message] = []
    try:
        (committed,) = client.committed([TopicPartition(topic, partition)], timeout=_READ_TIMEOUT_S)
        if committed.offset > last:  # decoded and committed since (by another member): nothing to examine
            return []
        client.assign([TopicPartition(topic, partition, max(first, committed.offset))])
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while time.monotonic() < deadline:
            message = client.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.name() == "_PARTITION_EOF":
                    break
                raise KafkaException(error)
            offset = int(message.offset() or 0)
            if offset > last:
                break
            found.append(message)
            if offset == last:
                break
        else:
            raise TransientError(f"reading {topic}[{partition}] {first}..{last} took over {_READ_TIMEOUT_S}s")
    finally:
        client.close()
    return found


# --- decoding in an isolated process ----------------------------------------------------------------------

_Record = tuple[int, int, bytes | None, bytes | None, list[tuple[str, str | bytes | None]] | None, tuple[int, int]]


def _record(message: Message) -> _Record:
    headers = message.headers()
    listed = list(headers.items()) if isinstance(headers, dict) else headers
    return (
        int(message.partition() or 0),
        int(message.offset() or 0),
        message.key(),
        message.value(),
        listed,
        message.timestamp(),
    )


def find_crashers(settings: Settings, records: dict[str, list[Message]], timeout_s: float) -> list[tuple[Message, str]]:
    """The records (by topic) whose decoding kills a child process, each with why it died.

    One child decodes each topic's records together (after an innocent kill, that is all it takes); where that
    kills it, record by record, with a new child after each death.
    """
    crashers: list[tuple[Message, str]] = []
    child: _Child | None = None
    try:
        for topic, messages in records.items():
            if not messages:
                continue
            child = child or _Child(settings, timeout_s)
            if child.decode(topic, [_record(m) for m in messages]) is None:
                continue
            child.close()
            child = None
            for message in messages:
                child = child or _Child(settings, timeout_s)
                death = child.decode(topic, [_record(message)])
                if death is not None:
                    crashers.append((message, death))
                    child.close()
                    child = None
    finally:
        if child is not None:
            child.close()
    return crashers


class _Child:
    """One spawned decoder process: ``decode`` returns None when it survived, else how it died."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._timeout_s = timeout_s
        self._process = context.Process(
            target=_isolated_decoder, args=(settings, timeout_s, child_end), name="cdcflow-quarantine", daemon=True
        )
        self._process.start()
        child_end.close()
        if not self._conn.poll(_CHILD_START_S) or self._recv() != "ready":
            self.close()
            raise TransientError(f"the isolated decoder process did not start (exit {self._process.exitcode})")

    def decode(self, topic: str, records: list[_Record]) -> str | None:
        try:
            self._conn.send((topic, records))
        except (BrokenPipeError, OSError):
            return self._death()
        # a backstop for a child without a watchdog (decode_timeout_s 0): its own SIGALRM normally comes first
        backstop = (self._timeout_s or _NO_TIMEOUT_BACKSTOP_S) + 60.0
        if not self._conn.poll(backstop):
            self._process.kill()
            self._process.join()
            return f"decoding did not finish within {backstop:.0f}s (killed)"
        if self._recv() == "done":
            return None
        return self._death()

    def _recv(self) -> Any:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return None

    def _death(self) -> str:
        self._process.join(timeout=30)
        code = self._process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if -code == signal.SIGALRM:
                return f"decoding took longer than {self._timeout_s:g}s ({name})"
            return f"the decoding process was killed by {name}"
        return f"the decoding process exited with status {code}"

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._conn.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _isolated_decoder(settings: Settings, timeout_s: float, conn: Connection) -> None:
    """The child: decode what it is sent, answer ``done`` after each; dying is its other answer."""
    from services.consumer.wiring import open_router

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the writer, which ends the child itself
    watchdog = DecodeWatchdog(timeout_s)
    with open_router(settings) as router:
        conn.send("ready")
        while (request := _next_request(conn)) is not None:
            topic, records = request
            decoder = router.route(topic).decoder
            if decoder is not None:
                batch = MessageBatch.of([_message(topic, r) for r in records])
                with watchdog.watching():
                    crash_if_marked(batch.values)
                    _decode_surviving_errors(decoder, topic, batch)
            conn.send("done")


def _next_request(conn: Connection) -> Any:
    """The next request; None to stop, also when the writer is gone (the pipe is closed)."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


def _decode_surviving_errors(decoder: EventDecoder, topic: str, batch: MessageBatch) -> None:
    """Only a death counts here: an exception is the writer's guard's business (``decoder_error``)."""
    try:
        decoder.decode(topic, batch, time.time_ns() // 1_000)
    except Exception:  # noqa: S110 - the record survived; that is all this process is asked
        pass
    except BaseException as exc:
        if not is_native_panic(exc):
            raise


def _message(topic: str, record: _Record) -> Message:
    partition, offset, key, value, headers, timestamp = record
    return Message(
        topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers, timestamp=timestamp
    )


def crash_failure(message: Message, death: str) -> DecodeFailure:
    detail = f"decoding this record alone in an isolated process ended it: {death}"
    return DecodeFailure(message, Reason.DECODER_CRASH, detail, "DecoderCrash", "decode")
