"""Which table a captured topic belongs to, and how its events are decoded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from services.common.contracts import ContractRegistry, TableContract
from services.common.contracts.catalog import refused_columns
from services.common.contracts.errors import UnknownTableError
from services.common.debezium.avro import AvroEventDecoder
from services.common.debezium.envelope import untouched_toast_arrives_null
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.debezium.records import DecodeResult, Reason
from services.common.debezium.registry import SchemaRegistryClient
from services.common.errors import ConfigError
from services.common.kafka.message_columns import MessageBatch
from services.common.logging import get_logger

__all__ = ["EventDecoder", "Route", "Router", "ValueFormat"]

log = get_logger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

ValueFormat = Literal["json", "avro-confluent", "avro-single-object"]


class EventDecoder(Protocol):
    """What the writer needs of a decoder, whatever the wire format (JSON, Avro)."""

    @property
    def contract(self) -> TableContract: ...

    def decode(self, topic: str, batch: MessageBatch, ingested_at_us: int) -> DecodeResult: ...


@dataclass(frozen=True, slots=True)
class Route:
    """``decoder`` for a table; ``skip`` for excluded tables; otherwise a reason to DLQ every record."""

    schema: str = ""
    table: str = ""
    decoder: EventDecoder | None = None
    skip: bool = False
    reason: str = ""
    detail: str = ""


class Router:
    def __init__(
        self,
        topic_prefix: str,
        contracts: ContractRegistry,
        exclude: list[str],
        max_value_bytes: int,
        *,
        value_format: ValueFormat = "json",
        schema_registry_url: str | None = None,
        source: str = "",
        native_reader: bool = True,
    ) -> None:
        self._topic_prefix = topic_prefix
        self._native_reader = native_reader
        self._source = source  # the contracts' source of the topics under the prefix ("": the primary one)
        self._prefix = topic_prefix + "."
        self._contracts = contracts
        self._exclude = set(exclude)
        self._max_value_bytes = max_value_bytes
        self._routes: dict[str, Route] = {}
        self._value_format = value_format
        self._registry: SchemaRegistryClient | None = None
        if value_format == "avro-confluent":
            if not schema_registry_url:
                raise ConfigError("value_format avro-confluent needs a schema registry URL")
            self._registry = SchemaRegistryClient(schema_registry_url)
        # single-object events name their writer schema by fingerprint: keep every version seen, so
        # events written before an evolution still resolve after it
        self._versions: dict[tuple[str, str], dict[int, TableContract]] = {}

    def close(self) -> None:
        """Release the schema registry connection (if any)."""
        if self._registry is not None:
            self._registry.close()

    def subscription(self) -> str:
        """Every topic under the prefix; librdkafka treats a leading ``^`` as a regex."""
        return "^" + re.escape(self._prefix) + ".*"

    def route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = self._resolve(topic)
        return route

    def adopt(self, contract: TableContract) -> None:
        """Use a newer contract version from now on, for every topic of its table."""
        self._contracts.put(contract)
        if contract.source != self._source:
            return
        for topic, route in list(self._routes.items()):
            if (route.schema, route.table) == (contract.schema, contract.table):
                self._routes[topic] = self._resolve(topic)

    def _resolve(self, topic: str) -> Route:
        parts = topic.removeprefix(self._prefix).split(".")
        if not topic.startswith(self._prefix) or len(parts) != 2 or not all(_SAFE_NAME.match(p) for p in parts):
            detail = f"topic {topic!r} is not <prefix>.<schema>.<table> with plain identifiers"
            return Route(reason=Reason.UNSAFE_NAME, detail=detail)
        schema, table = parts
        if f"{schema}.{table}" in self._exclude:
            return Route(schema, table, skip=True)
        try:
            contract = self._contracts.get(schema, table, self._source)
        except UnknownTableError as exc:
            return Route(schema, table, reason=Reason.UNKNOWN_TABLE, detail=str(exc))
        if refused := refused_columns(contract):
            return Route(schema, table, reason=Reason.SCHEMA_MISMATCH, detail=_refusal(contract, refused))
        _warn_of_toast_arriving_null(contract)
        return Route(schema, table, self._decoder(contract))

    def _decoder(self, contract: TableContract) -> EventDecoder:
        limit = self._max_value_bytes
        if self._registry is not None:
            return AvroEventDecoder.confluent(contract, self._registry, max_value_bytes=limit)
        if self._value_format == "avro-single-object":
            versions = self._versions.setdefault((contract.schema, contract.table), {})
            versions[contract.version] = contract
            earlier = [c for v, c in versions.items() if v != contract.version]
            return AvroEventDecoder.single_object(
                contract, topic_prefix=self._topic_prefix, earlier=earlier, max_value_bytes=limit
            )
        return JsonEventDecoder(contract, max_value_bytes=limit, native_reader=self._native_reader)


def _refusal(contract: TableContract, refused: dict[str, str]) -> str:
    """Why every record of a table whose stored contract captures a refused type goes to the DLQ (logged once,
    when the table is first routed): landed, those columns would silently hold other values."""
    table = contract.qualified_name
    columns = "; ".join(f"{name}: {why}" for name, why in refused.items())
    pattern = "|".join(re.escape(name) for name in refused)
    fix = (
        f"exclude the column(s) in the connector (column.exclude.list) and the writer (CDCFLOW_WRITER__EXCLUDE_COLUMNS,"
        f" {re.escape(table)}\\.({pattern})), run `cdcflow schemas generate`, restart the writer and replay the DLQ"
        " (cdcflow dlq replay --reason schema_mismatch)"
    )
    log.error("writer.contract_refused", table=table, contract_version=contract.version, columns=refused, fix=fix)
    return f"contract {table} v{contract.version} captures a type cdcflow refuses ({columns}): {fix}"


def _warn_of_toast_arriving_null(contract: TableContract) -> None:
    """Names the columns whose untouched TOASTed value arrives as NULL (README: a known limit), with the remedy."""
    if columns := untouched_toast_arrives_null(contract):
        table = contract.qualified_name
        remedy = f"ALTER TABLE {table} REPLICA IDENTITY FULL"
        log.warning("writer.untouched_toast_arrives_null", table=table, columns=columns, remedy=remedy)
