"""The in-memory form of a table contract."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from services.common.contracts.errors import ContractError, UnknownTableError

__all__ = ["NAME_RULE", "Column", "ContractRegistry", "Semantic", "TableContract", "is_safe_name"]

Semantic = Literal[
    "int16",
    "int32",
    "int64",
    "boolean",
    "float32",
    "float64",
    "decimal",  # NUMERIC(p, s): Debezium sends a JSON number with exactly s digits
    "variable_decimal",  # NUMERIC without precision: Debezium's {scale, value} struct
    "string",
    "uuid",
    "json",
    "date",  # days since the epoch
    "timestamp",  # timestamp without time zone: microseconds since the epoch, wall time
    "timestamp_millis",  # timestamp(0..3) without time zone: Debezium's adaptive precision sends milliseconds
    "timestamptz",  # ISO-8601 string in UTC
    "time",  # microseconds since midnight
    "bytes",  # base64 text on the wire
    "array",
]

# Unconstrained NUMERIC lands as the widest decimal both Arrow and BigQuery (BIGNUMERIC) hold exactly;
# a value beyond it is a decimal overflow and goes to the DLQ, never to a float.
VARIABLE_DECIMAL_PRECISION = 76
VARIABLE_DECIMAL_SCALE = 38

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
NAME_RULE = "letters, digits, '_' and '$', not starting with a digit"
"""What a schema, table or column name of a contract may hold: contracts are Avro schemas, and the name is a
lake folder, a Parquet column and a warehouse identifier as it stands."""
_SOURCE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic name characters and length


def is_safe_name(name: str) -> bool:
    """Whether ``name`` follows :data:`NAME_RULE`."""
    return _NAME.match(name) is not None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    semantic: Semantic
    pg_type: str
    nullable: bool = True
    precision: int | None = None
    scale: int | None = None
    items: Column | None = None  # element of an array

    def __post_init__(self) -> None:
        if not is_safe_name(self.name):
            raise ContractError(f"column name {self.name!r} is not a safe identifier ({NAME_RULE})")
        if self.semantic == "decimal" and (self.precision is None or self.scale is None):
            raise ContractError(f"column {self.name}: a decimal needs precision and scale")
        if self.semantic == "array" and self.items is None:
            raise ContractError(f"column {self.name}: an array needs its element type")


@dataclass(frozen=True, slots=True)
class TableContract:
    schema: str
    table: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    version: int = 1
    doc: str = ""
    # PostgreSQL's REPLICA IDENTITY: only "full" sends whole before images. Otherwise a delete's before
    # image holds just the key and Debezium fills the other NOT NULL columns with type defaults.
    replica_identity: Literal["default", "full", "index", "nothing"] = "default"
    # Source columns no change event carries, each with why: stored generated columns (PostgreSQL's
    # logical decoding before 18 never sends them) and columns excluded from capture. No lake, bronze or
    # silver column pretends to hold them, and verify names them as not compared.
    uncaptured: tuple[tuple[str, str], ...] = ()
    # Columns an earlier version captured that the change events no longer carry: dropped in PostgreSQL (or
    # excluded from capture since, then also uncaptured). They stay in the lake, bronze and silver, so files
    # and tables never lose a column and the history keeps their values; versions written since hold NULL.
    dropped: tuple[str, ...] = ()
    # The topic prefix of the source (connector) the table belongs to; "" for the primary source, the one
    # under the stack's default prefix. Two sources may both hold public.users: names across sources are
    # in services.common.naming.
    source: str = ""
    # The cdcflow service that writes the table's topic ("cdcflow enrich"); "" for a table captured from
    # PostgreSQL. Such a table has no source table to verify against, and its silver name keeps its schema
    # (services.common.naming.silver_name): enriched.transactions must not take lending.transactions' name.
    produced_by: str = ""

    def __post_init__(self) -> None:
        for part in (self.schema, self.table):
            if not is_safe_name(part):
                raise ContractError(
                    f"{part!r} is not a safe schema or table name ({NAME_RULE}): leave the table out of the "
                    "connector (table.include.list), or rename it"
                )
        if self.source and not _SOURCE.match(self.source):
            raise ContractError(f"{self.source!r} is not a topic prefix (letters, digits, '.', '_', '-')")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ContractError(f"{self.qualified_name}: duplicate column names")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ContractError(f"{self.qualified_name}: primary key column(s) {missing} are not columns")
        stray = [c for c in self.dropped if c not in names or c in self.primary_key]
        if stray:
            raise ContractError(f"{self.qualified_name}: dropped column(s) {stray} are not non-key columns")

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def full_name(self) -> str:
        """``<schema>.<table>``, or ``<source>/<schema>.<table>`` for another source's: unique across sources."""
        return f"{self.source}/{self.qualified_name}" if self.source else self.qualified_name

    @property
    def live_columns(self) -> tuple[Column, ...]:
        """The columns PostgreSQL still has (every column but the dropped ones)."""
        return tuple(c for c in self.columns if c.name not in self.dropped)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def fingerprint(self) -> str:
        """A stable digest of the columns, for telling contract versions apart in logs and files."""
        from hashlib import sha256

        from services.common.contracts.store import contract_to_avro

        return sha256(json.dumps(contract_to_avro(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(slots=True)
class ContractRegistry:
    """The newest contract of every table, looked up by ``(schema, table)`` and its source (``""``: primary)."""

    _by_name: dict[tuple[str, str, str], TableContract] = field(default_factory=dict)

    @classmethod
    def of(cls, contracts: Iterable[TableContract]) -> ContractRegistry:
        registry = cls()
        for contract in contracts:
            registry.put(contract)
        return registry

    def put(self, contract: TableContract) -> None:
        key = (contract.source, contract.schema, contract.table)
        current = self._by_name.get(key)
        if current is None or contract.version >= current.version:
            self._by_name[key] = contract

    def get(self, schema: str, table: str, source: str = "") -> TableContract:
        try:
            return self._by_name[(source, schema, table)]
        except KeyError:
            of = f" of source {source!r}" if source else ""
            raise UnknownTableError(
                f"no contract for table {schema}.{table}{of}: run `cdcflow schemas generate` and add it to schemas/"
            ) from None

    def __iter__(self) -> Iterator[TableContract]:
        return iter(sorted(self._by_name.values(), key=lambda c: (c.source, c.qualified_name)))

    def __len__(self) -> int:
        return len(self._by_name)

    def as_dict(self) -> dict[str, Any]:
        return {c.full_name: c.version for c in self}
