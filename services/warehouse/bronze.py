"""Bronze: the append-only change log of every captured table, derived from its contract.

Bronze holds the lake's columns (the row image, then the writer's metadata) plus the loader's own:
``_loaded_at``, ``_load_id`` and ``_lake_file``. Columns get added, or widened when every value they hold
fits the new type (a wider integer or decimal); none is ever removed or rewritten, and every one is nullable.
What every backend shares lives here: the table's name, its columns, the load manifest's columns, the
batch a load takes, and the rule that decides how bronze may change (:func:`evolve`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

from services.common.contracts import TableContract, lake_schema
from services.common.contracts.reserved import names_alike
from services.common.lake import LakeFile
from services.common.naming import bronze_name
from services.warehouse.errors import BronzeSchemaError

__all__ = [
    "COORDINATES",
    "LOADER_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_KEY",
    "MANIFEST_TABLE",
    "BronzeChange",
    "LoadBatch",
    "bronze_schema",
    "bronze_table",
    "evolve",
    "refuse_names_alike",
    "staging_name",
    "widens",
]

_Type = TypeVar("_Type")

_LOADER_RUN = uuid.uuid4().hex[:8]
"""This loader process's mark in its staging tables' names."""

COORDINATES = ("_kafka_topic", "_kafka_partition", "_kafka_offset")
"""A change's identity: each one is in bronze at most once."""

_UTC = pa.timestamp("us", tz="UTC")
LOADER_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("_loaded_at", _UTC),
    pa.field("_load_id", pa.string()),
    pa.field("_lake_file", pa.string()),
)


def bronze_table(contract: TableContract) -> str:
    """The table's name in the ``bronze`` schema (dataset), unique across sources: ``<schema>__<table>`` for
    the primary source (:func:`services.common.naming.bronze_name`)."""
    return bronze_name(contract.source, contract.schema, contract.table)


MANIFEST_TABLE = "_cdcflow_load_manifest"
"""The load manifest, beside the bronze tables: one row per version of a lake file loaded."""
MANIFEST_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("load_id", pa.string(), nullable=False),
    pa.field("bronze_table", pa.string(), nullable=False),
    pa.field("lake_file", pa.string(), nullable=False),
    pa.field("lake_version", pa.string(), nullable=False),
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("loaded_at", _UTC, nullable=False),
)
MANIFEST_KEY = ("lake_file", "lake_version")


def bronze_schema(contract: TableContract) -> pa.Schema:
    fields = [f.with_nullable(True) for f in lake_schema(contract)]
    return pa.schema([*fields, *LOADER_COLUMNS])


@dataclass(frozen=True, slots=True)
class LoadBatch:
    """Files of one table loaded together. The id is derived from the files, so a retry reuses it."""

    contract: TableContract
    files: tuple[LakeFile, ...]

    @property
    def load_id(self) -> str:
        digest = hashlib.sha256(bronze_table(self.contract).encode())
        for file in sorted(self.files, key=lambda f: f.path):
            digest.update(f"\0{file.path}\0{file.version}".encode())
        return digest.hexdigest()[:24]

    @property
    def staging(self) -> str:
        """The batch's staging table: its bronze table, its load id and this loader process, so two loaders
        of one batch (a rolling update's old and new pod) never share one, and a retry in one process
        replaces its own."""
        return staging_name(bronze_table(self.contract), self.load_id)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def staging_name(bronze: str, load_id: str) -> str:
    """See :attr:`LoadBatch.staging`."""
    return f"{bronze}__{load_id}__{_LOADER_RUN}"


@dataclass(frozen=True, slots=True)
class BronzeChange:
    """What a new contract version does to an existing bronze table."""

    added: list[str]
    widened: list[str]


def refuse_names_alike(contract: TableContract) -> None:
    """Both warehouses match column names without regard to case, so two bronze columns whose names differ
    only in case cannot both exist: a column renamed that way (``due`` to ``Due``) keeps its old name in the
    contract, as every dropped column does. Refused as a :class:`BronzeSchemaError`, which stops this table."""
    if alike := names_alike(field.name for field in bronze_schema(contract)):
        raise BronzeSchemaError(
            f"bronze.{bronze_table(contract)}: columns {alike[0]!r} and {alike[1]!r} differ only in case, and the "
            "warehouse matches column names without regard to case; rename the column in PostgreSQL to a name of "
            "its own, or exclude one of them from capture"
        )


def evolve(
    table: str,
    existing: Mapping[str, _Type],
    wanted: Sequence[tuple[str, _Type]],
    *,
    changed: Callable[[_Type, _Type], bool],
    describe: Callable[[_Type], str],
    widens: Callable[[_Type, _Type], bool],
) -> BronzeChange:
    """The columns of ``wanted`` bronze ``table`` lacks, and those whose type widens, each in order.

    ``existing`` and ``wanted`` map column names to a backend's column types, which ``changed`` compares,
    ``widens`` judges (every value of the old type is one of the new, see :func:`widens`) and ``describe``
    spells. Any other type change is a :class:`BronzeSchemaError` naming every such column: bronze never
    rewrites what it already holds.
    """
    differ = [
        (name, existing[name], kind) for name, kind in wanted if name in existing and changed(existing[name], kind)
    ]
    refused = [(name, old, new) for name, old, new in differ if not widens(old, new)]
    if refused:
        detail = ", ".join(f"{name}: {describe(old)} → {describe(new)}" for name, old, new in refused)
        raise BronzeSchemaError(
            f"bronze.{table}: incompatible change ({detail}); bronze only adds columns and widens numeric types"
        )
    return BronzeChange(
        added=[name for name, _ in wanted if name not in existing], widened=[name for name, _, _ in differ]
    )


_INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}
"""Decimal digits a signed integer of that many bits may need."""


def widens(old: pa.DataType, new: pa.DataType) -> bool:
    """Whether every value of the lake type ``old`` is exactly a value of ``new``, so a bronze column can
    change from one to the other in place: a wider integer, an integer into a decimal or a double that holds
    all of it, a float into a double, a decimal with no fewer integer digits and no smaller scale; and the
    same for the elements of a list."""
    if pa.types.is_list(old) and pa.types.is_list(new):
        return old.value_type == new.value_type or widens(old.value_type, new.value_type)
    if pa.types.is_signed_integer(old):
        return _integer_widens(old, new)
    if pa.types.is_float32(old):
        return bool(pa.types.is_float64(new))
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        return bool(new.scale >= old.scale and new.precision - new.scale >= old.precision - old.scale)
    return False


def _integer_widens(old: pa.DataType, new: pa.DataType) -> bool:
    if pa.types.is_signed_integer(new):
        return bool(new.bit_width > old.bit_width)
    if pa.types.is_decimal(new):
        return bool(new.precision - new.scale >= _INTEGER_DIGITS[old.bit_width])
    return bool(pa.types.is_float64(new)) and old.bit_width <= 32  # a double holds 53 bits exactly
