"""A small Confluent Schema Registry client: writer schemas by id, parsed once and cached.

Schema ids are immutable, so a schema once fetched is valid forever and the cache only needs a size
bound. The two ways a lookup can fail mean different things to the writer: an id the registry does not
know is a property of the record (terminal: the record goes to the DLQ), while an unreachable or failing
registry is a property of the moment (transient: pause, retry, never DLQ a good record).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Self

import httpx
from fastavro.schema import SchemaParseException, parse_schema

from services.common.errors import TerminalError, TransientError

__all__ = ["RegistryUnavailableError", "SchemaRegistryClient", "UnknownSchemaError"]

_SCHEMA_NOT_FOUND = 40403  # the registry's error_code for GET /schemas/ids/<id> of an unknown id


class UnknownSchemaError(TerminalError):
    """The registry has no usable Avro schema under this id: every record naming it will fail alike."""


class RegistryUnavailableError(TransientError):
    """The registry could not answer now (refused, timed out, 5xx, not a registry): retry later."""


class SchemaRegistryClient:
    """``GET <url>/schemas/ids/<id>`` with a bounded LRU cache of parsed schemas."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        cache_size: int = 1_000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, transport=transport)
        self._where = str(self._client.base_url.copy_with(username=None, password=None))  # safe for logs
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The parsed writer schema of ``schema_id``.

        Raises :class:`UnknownSchemaError` (terminal) or :class:`RegistryUnavailableError` (transient).
        """
        cached = self._cache.get(schema_id)
        if cached is not None:
            self._cache.move_to_end(schema_id)
            return cached
        parsed = _parse(schema_id, self._fetch(schema_id))
        self._cache[schema_id] = parsed
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return parsed

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, schema_id: int) -> dict[str, Any]:
        try:
            response = self._client.get(f"/schemas/ids/{schema_id}")
        except httpx.TransportError as exc:
            raise RegistryUnavailableError(f"schema registry {self._where}: {exc!r}") from None
        body = _json(response)
        if response.status_code == 404 and body.get("error_code") == _SCHEMA_NOT_FOUND:
            raise UnknownSchemaError(f"schema id {schema_id} is not in the registry at {self._where}")
        if response.status_code != 200:
            # 5xx, 429, auth, or a 404 from something that is not a registry: nothing about the record
            detail = f"HTTP {response.status_code} for schema id {schema_id} from {self._where}"
            raise RegistryUnavailableError(detail)
        if not isinstance(body.get("schema"), str):
            raise RegistryUnavailableError(f"{self._where} answered schema id {schema_id} without a schema")
        return body


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _parse(schema_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Only Avro schemas can be read here; a Protobuf or JSON-Schema id is as unusable as an unknown one."""
    schema_type = body.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise UnknownSchemaError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
    try:
        parsed = parse_schema(json.loads(body["schema"]))
    # JSONDecodeError is a ValueError; a schema nested beyond either parser's recursion is as unusable
    except (SchemaParseException, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise UnknownSchemaError(f"schema id {schema_id} is not a valid Avro schema: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise UnknownSchemaError(f"schema id {schema_id} is not an Avro record schema")
    return parsed
