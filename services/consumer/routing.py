"""Which table a captured topic belongs to, and how its events are decoded."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.contracts import ContractRegistry, TableContract
from services.common.contracts.errors import UnknownTableError
from services.common.debezium.json_batch import JsonEventDecoder
from services.common.debezium.records import Reason

__all__ = ["Route", "Router"]

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True, slots=True)
class Route:
    """``decoder`` for a table; ``skip`` for excluded tables; otherwise a reason to DLQ every record."""

    schema: str = ""
    table: str = ""
    decoder: JsonEventDecoder | None = None
    skip: bool = False
    reason: str = ""
    detail: str = ""


class Router:
    def __init__(
        self, topic_prefix: str, contracts: ContractRegistry, exclude: list[str], max_value_bytes: int
    ) -> None:
        self._prefix = topic_prefix + "."
        self._contracts = contracts
        self._exclude = set(exclude)
        self._max_value_bytes = max_value_bytes
        self._routes: dict[str, Route] = {}

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
            contract = self._contracts.get(schema, table)
        except UnknownTableError as exc:
            return Route(schema, table, reason=Reason.UNKNOWN_TABLE, detail=str(exc))
        return Route(schema, table, JsonEventDecoder(contract, max_value_bytes=self._max_value_bytes))
