"""A consumer whose ``consume`` returns a whole batch as columns.

:class:`BatchConsumer` is the interface the lake writer consumes through; it speaks confluent_kafka's
language — its configuration, ``TopicPartition``, ``KafkaException``, rebalance callbacks called as
``callback(consumer, partitions)``. Two implementations:

- :class:`NativeBatchConsumer`, on the native consumer (Rust, the optional ``_kafkabatch`` extension),
  which fetches a batch with one librdkafka call and hands it over as buffers: the values become one Arrow
  ``large_binary`` array and the offsets and timestamps int64 arrays, with no Python object per record;
- :class:`ConfluentBatchConsumer`, on confluent_kafka's ``Consumer.consume``: a Python object per record,
  every configuration confluent_kafka takes (callbacks included), no compiler needed to install.

``Fetch.message(i)`` gives one record as a ``confluent_kafka.Message`` for the rare path that needs one
(the dead-letter queue).
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from services.common.errors import ConfigError
from services.common.kafka import message_columns
from services.common.logging import get_logger

try:
    from services.common.kafka._kafkabatch import Fetched, KafkaCallError, NativeConsumer
except ImportError:  # installed without a Rust toolchain: the confluent consumer is the only one
    NATIVE_CONSUMER = False
else:
    NATIVE_CONSUMER = True

__all__ = [
    "LIBRDKAFKA_LOG",
    "NATIVE_CONSUMER",
    "BatchConsumer",
    "CommitResult",
    "Fetch",
    "NativeBatchConsumer",
    "RebalanceCallback",
    "native_config",
]

log = get_logger(__name__)

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]
"""``callback(consumer, partitions)``, as confluent_kafka calls ``on_assign``, ``on_revoke`` and ``on_lost``."""

LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
"""Where librdkafka's own lines go (for every client of the project), as structured log events like any other;
without a logger it would write them to stderr."""

# librdkafka logs with syslog levels; confluent_kafka maps them to the standard library's the same way.
_LEVELS = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}

_INT64 = np.dtype("<i8")
_SEEK_TIMEOUT_S = 10.0


# The native consumer's librdkafka is built without Kerberos (GSSAPI) and without OAUTHBEARER's callbacks.
_NATIVE_REFUSES_MECHANISMS = frozenset({"GSSAPI", "OAUTHBEARER"})
_TO_CONFLUENT = "set CDCFLOW_WRITER__CONSUMER=confluent to consume with confluent_kafka, which supports it"


def native_config(config: dict[str, Any]) -> tuple[dict[str, str], logging.Logger]:
    """librdkafka's string properties and the logger for its lines, from a confluent_kafka-style config.

    A setting the native consumer cannot honour (a callback such as ``oauth_cb`` or ``stats_cb``, a SASL
    mechanism its librdkafka lacks) is a :class:`ConfigError` naming the confluent consumer, never dropped.
    """
    logger = config.get("logger", LIBRDKAFKA_LOG)
    if not isinstance(logger, logging.Logger):
        raise TypeError(f"logger: expected a logging.Logger, got {type(logger).__name__}")
    mechanisms = {
        m.strip().upper() for m in str(config.get("sasl.mechanisms", config.get("sasl.mechanism", ""))).split(",")
    }
    if refused := sorted(mechanisms & _NATIVE_REFUSES_MECHANISMS):
        raise ConfigError(f"the native consumer cannot authenticate with SASL {', '.join(refused)}: {_TO_CONFLUENT}")
    return {key: _property(key, value) for key, value in config.items() if key != "logger"}, logger


def _property(key: str, value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int, but librdkafka wants true/false
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if callable(value):
        raise ConfigError(f"{key}: the native consumer takes no callbacks; {_TO_CONFLUENT}")
    raise TypeError(f"{key}: librdkafka takes str, int, float or bool values, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Fetch:
    """One consumed batch, in fetch order. ``offsets`` and ``timestamps_ms`` (-1: none) are read-only.

    ``runs`` are ``(topic, partition, start, stop)``: each a slice of consecutive messages of one partition.
    """

    runs: list[tuple[str, int, int, int]]
    values: pa.LargeBinaryArray
    offsets: np.ndarray
    timestamps_ms: np.ndarray
    _message: Callable[[int], Message] = field(repr=False)

    @classmethod
    def of(cls, batch: Fetched) -> Fetch:
        """A batch the native consumer fetched, its buffers taken over without a copy."""
        validity, ends, data = batch.values()
        buffers = [None if validity is None else pa.py_buffer(validity), pa.py_buffer(ends), pa.py_buffer(data)]
        values = pa.Array.from_buffers(pa.large_binary(), len(batch), buffers, null_count=0 if validity is None else -1)
        return cls(
            runs=batch.runs(),
            values=values,
            offsets=np.frombuffer(batch.offsets(), dtype=_INT64),
            timestamps_ms=np.frombuffer(batch.timestamps_ms(), dtype=_INT64),
            _message=functools.partial(_native_message, batch),
        )

    @classmethod
    def of_messages(cls, messages: list[Message]) -> Fetch:
        """A batch of confluent_kafka messages (without errors), as columns."""
        topics = list(map(Message.topic, messages))
        partitions = message_columns.partitions(messages)
        values = pa.array(message_columns.values(messages), type=pa.large_binary())
        assert isinstance(values, pa.LargeBinaryArray)
        return cls(
            runs=_runs(topics, partitions),
            values=values,
            offsets=message_columns.offsets(messages),
            timestamps_ms=message_columns.timestamps_ms(messages),
            _message=messages.__getitem__,
        )

    def __len__(self) -> int:
        return len(self.values)

    def message(self, i: int) -> Message:
        """Message ``i`` as confluent_kafka's ``Message`` (key, headers and all)."""
        return self._message(i)


def _runs(topics: list[str | None], partitions: np.ndarray) -> list[tuple[str, int, int, int]]:
    """``(topic, partition, start, stop)`` of each run of consecutive messages of one partition."""
    if not topics:
        return []
    named = np.array(topics, dtype=object)
    changes = (named[1:] != named[:-1]) | (partitions[1:] != partitions[:-1])
    starts = [0, *(np.flatnonzero(changes) + 1).tolist()]
    stops = [*starts[1:], len(topics)]
    return [(str(topics[a]), int(partitions[a]), a, b) for a, b in zip(starts, stops, strict=True)]


def _native_message(batch: Fetched, i: int) -> Message:
    topic, partition, offset, timestamp_type, timestamp_ms, key, value, headers = batch.record(i)
    header_list: list[tuple[str, str | bytes | None]] | None = None if headers is None else [*headers]
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=header_list,
        timestamp=(timestamp_type, timestamp_ms),
    )


@dataclass(frozen=True, slots=True)
class CommitResult:
    """One partition's commit outcome. confluent_kafka's ``TopicPartition.error`` is read-only, so the
    outcome cannot travel in a ``TopicPartition`` built here; this carries the same fields."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


class BatchConsumer(Protocol):
    """A group consumer with confluent_kafka's interface whose ``consume`` returns a :class:`Fetch`."""

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None: ...

    def consume(self, num_messages: int, timeout: float) -> Fetch: ...

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = True) -> tuple[int, int]: ...

    def assignment(self) -> list[TopicPartition]: ...

    def close(self) -> None: ...


class NativeBatchConsumer:
    """:class:`BatchConsumer` on the native consumer: a batch as columns, no Python object per record.

    Every call fails with ``KafkaException``, as confluent_kafka's do. Rebalance callbacks run inside
    ``consume`` and ``close``; an exception they raise comes out of that call. Close it explicitly: one
    dropped unclosed still leaves the group, but without calling ``on_revoke`` (there is no consumer left
    to pass it).
    """

    __slots__ = ("__weakref__", "_native", "_on_assign", "_on_lost", "_on_revoke")

    def __init__(self, config: dict[str, Any]) -> None:
        if not NATIVE_CONSUMER:
            raise ConfigError(
                "the native consumer is not installed (the package was built without a Rust toolchain): "
                "set CDCFLOW_WRITER__CONSUMER=confluent, or reinstall with cargo on PATH"
            )
        properties, logger = native_config(config)
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._on_lost: RebalanceCallback | None = None
        # Through a weak reference: the native consumer holding a strong one back would make a cycle the
        # garbage collector cannot see, and a consumer never closed.
        rebalance = functools.partial(_rebalance, weakref.ref(self))
        with _kafka_errors():
            self._native = NativeConsumer(properties, rebalance, functools.partial(_log, logger))

    def subscribe(
        self,
        topics: list[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        """Subscribes to ``topics`` (``^`` starts a pattern). Without ``on_lost``, lost partitions go to
        ``on_revoke``, as in confluent_kafka."""
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        with _kafka_errors():
            self._native.subscribe(topics)

    def consume(self, num_messages: int, timeout: float) -> Fetch:
        """Up to ``num_messages``, waiting up to ``timeout`` seconds (a negative one does not wait, unlike
        confluent_kafka's "forever"). A fatal error raises; others are logged and skipped."""
        with _kafka_errors():
            batch, errors = self._native.consume(num_messages, timeout)
        for code, name, reason, fatal in errors:
            if fatal:
                raise KafkaException(KafkaError(code, reason, fatal=True))
            log.warning("kafka.consume_error", code=code, name=name, reason=reason)
        return Fetch.of(batch)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = False) -> list[CommitResult]:
        """Commits synchronously; each partition's outcome comes back (see :class:`CommitResult`)."""
        if asynchronous:
            raise ValueError("BatchConsumer commits synchronously only")
        with _kafka_errors():
            results = self._native.commit([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return [CommitResult(t, p, o, None if name is None else _error_named(name)) for t, p, o, name in results]

    def pause(self, partitions: list[TopicPartition]) -> None:
        with _kafka_errors():
            self._native.pause(_pairs(partitions))

    def resume(self, partitions: list[TopicPartition]) -> None:
        with _kafka_errors():
            self._native.resume(_pairs(partitions))

    def seek(self, partition: TopicPartition) -> None:
        """The partition's next message is the one at ``partition.offset``."""
        with _kafka_errors():
            self._native.seek(partition.topic, partition.partition, partition.offset, _SEEK_TIMEOUT_S)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        with _kafka_errors():
            offsets = self._native.position(_pairs(partitions))
        return [TopicPartition(tp.topic, tp.partition, offset) for tp, offset in zip(partitions, offsets, strict=True)]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = True) -> tuple[int, int]:
        """The low and high watermarks last fetched (no broker request: ``cached`` must be true)."""
        if not cached:
            raise ValueError("BatchConsumer reads cached watermarks only")
        with _kafka_errors():
            return self._native.watermarks(partition.topic, partition.partition)

    def assignment(self) -> list[TopicPartition]:
        with _kafka_errors():
            return [TopicPartition(topic, partition) for topic, partition in self._native.assignment()]

    def close(self) -> None:
        """Leaves the group (the final ``on_revoke`` runs first); later calls fail."""
        with _kafka_errors():
            self._native.close()

    def _callback(self, kind: str) -> RebalanceCallback | None:
        if kind == "assign":
            return self._on_assign
        if kind == "lost" and self._on_lost is not None:
            return self._on_lost
        return self._on_revoke


def _rebalance(
    consumer_ref: weakref.ReferenceType[NativeBatchConsumer], kind: str, parts: list[tuple[str, int]]
) -> None:
    consumer = consumer_ref()
    if consumer is None:  # dropped without close(): there is no consumer to hand the partitions with
        return
    callback = consumer._callback(kind)
    if callback is not None:
        callback(consumer, [TopicPartition(topic, partition) for topic, partition in parts])


def _log(logger: logging.Logger, level: int, facility: str, message: str) -> None:
    logger.log(_LEVELS.get(level, logging.DEBUG), "%s: %s", facility, message)


@contextmanager
def _kafka_errors() -> Iterator[None]:
    """The native consumer's errors as confluent_kafka's, so callers keep catching ``KafkaException``."""
    try:
        yield
    except KafkaCallError as exc:
        code, _name, reason, fatal, retriable = exc.args
        raise KafkaException(KafkaError(code, reason, fatal=fatal, retriable=retriable)) from exc


def _error_named(name: str) -> KafkaError:
    """A per-partition error from librdkafka's name for it, which ``KafkaError`` has as a constant; a broker
    code newer than librdkafka comes as ``ERR_<code>``."""
    code = getattr(KafkaError, name, None)
    if not isinstance(code, int):
        code = int(name.removeprefix("ERR_")) if name.startswith("ERR_") else KafkaError.UNKNOWN
    return KafkaError(code)


def _pairs(partitions: list[TopicPartition]) -> list[tuple[str, int]]:
    return [(tp.topic, tp.partition) for tp in partitions]
