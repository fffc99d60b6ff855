"""Contracts on disk: one Avro record schema per table, ``<schema>.<table>.avsc``.

The Avro form is the published contract (other tools read it); cdcflow's extra facts ride along as
``cdcflow.*`` attributes, which Avro readers ignore.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from services.common.contracts.errors import ContractError
from services.common.contracts.model import (
    VARIABLE_DECIMAL_PRECISION,
    VARIABLE_DECIMAL_SCALE,
    Column,
    Semantic,
    TableContract,
)
from services.common.lake import Lake

__all__ = [
    "LAKE_CONTRACTS",
    "ContractReader",
    "ContractSet",
    "avro_to_contract",
    "contract_path",
    "contract_to_avro",
    "contracts_from_lake",
    "lake_contract_path",
    "load_contracts",
    "publish_contract",
    "write_contract",
]

_AVRO_PRIMITIVE: dict[str, Any] = {
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "boolean": "boolean",
    "float32": "float",
    "float64": "double",
    "string": "string",
    "json": "string",
    "uuid": {"type": "string", "logicalType": "uuid"},
    "date": {"type": "int", "logicalType": "date"},
    "timestamp": {"type": "long", "logicalType": "local-timestamp-micros"},
    "timestamp_millis": {"type": "long", "logicalType": "local-timestamp-millis"},
    "timestamptz": {"type": "long", "logicalType": "timestamp-micros"},
    "time": {"type": "long", "logicalType": "time-micros"},
    "bytes": "bytes",
}


def _avro_type(column: Column) -> Any:
    if column.semantic == "decimal":
        return {"type": "bytes", "logicalType": "decimal", "precision": column.precision, "scale": column.scale}
    if column.semantic == "variable_decimal":
        return {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": VARIABLE_DECIMAL_PRECISION,
            "scale": VARIABLE_DECIMAL_SCALE,
        }
    if column.semantic == "array":
        assert column.items is not None
        return {"type": "array", "items": _field_type(column.items)}
    return _AVRO_PRIMITIVE[column.semantic]


def _field_type(column: Column) -> Any:
    avro = _avro_type(column)
    return ["null", avro] if column.nullable else avro


def _column_to_field(column: Column) -> dict[str, Any]:
    field: dict[str, Any] = {"name": column.name, "type": _field_type(column)}
    if column.nullable:
        field["default"] = None
    field["cdcflow.semantic"] = column.semantic
    field["cdcflow.pg_type"] = column.pg_type
    if column.items is not None:
        field["cdcflow.items"] = _column_to_field(column.items)
    return field


def contract_to_avro(contract: TableContract) -> dict[str, Any]:
    document: dict[str, Any] = {"type": "record", "name": contract.table, "namespace": f"cdcflow.{contract.schema}"}
    if contract.doc:
        document["doc"] = contract.doc
    return {
        **document,
        "cdcflow.version": contract.version,
        "cdcflow.primary_key": list(contract.primary_key),
        "cdcflow.replica_identity": contract.replica_identity,
        **({"cdcflow.uncaptured": dict(contract.uncaptured)} if contract.uncaptured else {}),
        **({"cdcflow.dropped": list(contract.dropped)} if contract.dropped else {}),
        **({"cdcflow.source": contract.source} if contract.source else {}),
        **({"cdcflow.produced_by": contract.produced_by} if contract.produced_by else {}),
        "fields": [_column_to_field(c) for c in contract.columns],
    }


def _field_to_column(field: dict[str, Any]) -> Column:
    try:
        avro_type = field["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        if isinstance(avro_type, list):
            avro_type = next(t for t in avro_type if t != "null")
        semantic = cast(Semantic, field["cdcflow.semantic"])
        precision = scale = None
        if semantic == "decimal":
            precision, scale = int(avro_type["precision"]), int(avro_type["scale"])
        items = _field_to_column(field["cdcflow.items"]) if semantic == "array" else None
        return Column(
            name=str(field["name"]),
            semantic=semantic,
            pg_type=str(field.get("cdcflow.pg_type", "")),
            nullable=nullable,
            precision=precision,
            scale=scale,
            items=items,
        )
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise ContractError(f"field {field.get('name')!r} is not a cdcflow contract field: {exc!r}") from None


def avro_to_contract(document: dict[str, Any]) -> TableContract:
    try:
        namespace = str(document["namespace"])
        if not namespace.startswith("cdcflow."):
            raise ContractError(f"namespace {namespace!r} is not cdcflow.<schema>")
        return TableContract(
            schema=namespace.removeprefix("cdcflow."),
            table=str(document["name"]),
            columns=tuple(_field_to_column(f) for f in document["fields"]),
            primary_key=tuple(document.get("cdcflow.primary_key", [])),
            version=int(document.get("cdcflow.version", 1)),
            replica_identity=document.get("cdcflow.replica_identity", "default"),
            uncaptured=tuple((str(c), str(why)) for c, why in document.get("cdcflow.uncaptured", {}).items()),
            dropped=tuple(str(c) for c in document.get("cdcflow.dropped", [])),
            doc=str(document.get("doc", "")),
            source=str(document.get("cdcflow.source", "")),
            produced_by=str(document.get("cdcflow.produced_by", "")),
        )
    except KeyError as exc:
        raise ContractError(f"contract lacks {exc}") from None


def contract_path(directory: Path, contract: TableContract) -> Path:
    """``<directory>/<schema>.<table>.avsc``; another source's in ``<directory>/<topic prefix>/``."""
    folder = directory / contract.source if contract.source else directory
    return folder / f"{contract.qualified_name}.avsc"


def load_contracts(directory: Path) -> list[TableContract]:
    """Every ``*.avsc`` table contract in ``directory`` (the primary source's) and in its sub-folders (one per
    other source, named by its topic prefix); other Avro schemas there are skipped. A file that is not a valid
    contract raises :class:`ContractError` naming it."""
    return _read_contracts(directory).valid()


@dataclass(frozen=True, slots=True)
class ContractSet:
    """Contracts read from files, and why each file that holds no valid contract does not."""

    contracts: list[TableContract]
    broken: dict[str, str]  # by the table its file is named for: schema.table, prefix/schema.table for a source's

    def valid(self) -> list[TableContract]:
        """The contracts; a broken file raises :class:`ContractError`."""
        if self.broken:
            raise ContractError(next(iter(self.broken.values())))
        return self.contracts


def _read_contracts(directory: Path) -> ContractSet:
    contracts, broken = [], {}
    for path in _contract_files(directory):
        try:
            contract = _contract_in(directory, path)
        except ContractError as exc:
            broken[path.relative_to(directory).with_suffix("").as_posix()] = str(exc)
            continue
        if contract is not None:
            contracts.append(contract)
    return ContractSet(contracts, broken)


_MALFORMED = (ContractError, ValueError, TypeError, KeyError, AttributeError)
"""What parsing a hand-edited or truncated contract file can raise (ValueError: not JSON, not UTF-8)."""


def _contract_in(directory: Path, path: Path) -> TableContract | None:
    """The contract ``path`` holds; None for another Avro schema."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(document, dict) and "cdcflow.primary_key" in document):
            return None
        contract = avro_to_contract(document)
    except _MALFORMED as exc:
        raise ContractError(f"{path}: not a valid contract: {exc}") from None
    folder = contract_path(directory, contract).parent
    if folder != path.parent:  # a file copied into another source's folder
        raise ContractError(f"{path}: the contract of {contract.qualified_name} belongs in {folder}/")
    return contract


def _contract_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.avsc"), *directory.glob("*/*.avsc")])


def write_contract(directory: Path, contract: TableContract) -> Path:
    """Write atomically, with stable formatting so diffs in review show only real changes."""
    path = contract_path(directory, contract)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".tmp-{path.name}")
    temp.write_text(json.dumps(contract_to_avro(contract), indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


LAKE_CONTRACTS = "_contracts"
"""Contract versions evolved at run time live in the lake, beside the data they describe: the primary
source's in ``_contracts/<schema>.<table>/``, another source's in ``_contracts/<topic prefix>/<schema>.<table>/``
(two sources may both hold ``public.users``)."""


def lake_contract_path(contract: TableContract) -> str:
    folder = f"{contract.source}/{contract.qualified_name}" if contract.source else contract.qualified_name
    return f"{LAKE_CONTRACTS}/{folder}/v{contract.version:05d}.avsc"


def _source_of_path(path: str) -> str:
    """The source a contract's lake path says it belongs to: ``""`` for ``_contracts/<schema>.<table>/v….avsc``."""
    parts = path.removeprefix(f"{LAKE_CONTRACTS}/").split("/")
    return parts[0] if len(parts) == 3 else ""


def _contract_at(lake: Lake, path: str) -> TableContract:
    try:
        contract = avro_to_contract(json.loads(lake.read(path)))
    except _MALFORMED as exc:
        raise ContractError(f"{lake.uri(path)}: not a valid contract: {exc}") from None
    if contract.source != _source_of_path(path):  # a file copied into another source's folder
        raise ContractError(
            f"{lake.uri(path)}: belongs to source {contract.source or '(primary)'!r}, not to the folder it is in"
        )
    return contract


def publish_contract(lake: Lake, contract: TableContract) -> str:
    """Write an evolved contract version into the lake, where every writer and loader reads it."""
    path = lake_contract_path(contract)
    lake.write(path, (json.dumps(contract_to_avro(contract), indent=2) + "\n").encode())
    return path


def contracts_from_lake(lake: Lake) -> list[TableContract]:
    """Every contract version published in the lake, of every source, oldest first per table. A file that is not
    a valid contract raises :class:`ContractError` naming it."""
    return _contracts_at(lake, [f.path for f in lake.list(f"{LAKE_CONTRACTS}/") if f.path.endswith(".avsc")]).valid()


def _contracts_at(lake: Lake, paths: list[str]) -> ContractSet:
    found, broken = [], {}
    for path in paths:
        try:
            found.append(_contract_at(lake, path))
        except ContractError as exc:
            broken["/".join(path.removeprefix(f"{LAKE_CONTRACTS}/").split("/")[:-1])] = str(exc)
    return ContractSet(sorted(found, key=lambda c: (c.source, c.qualified_name, c.version)), broken)


class ContractReader:
    """The repository's contracts in ``directory`` and every version published in ``lake``, read again only
    when one of their files changed: a service that asks every cycle lists and stats the files then, instead of
    reading and parsing every contract (with 50 tables most of a loader cycle that finds nothing new)."""

    def __init__(self, directory: Path, lake: Lake) -> None:
        self._directory = directory
        self._lake = lake
        self._stamp: tuple[object, ...] | None = None
        self._read = ContractSet([], {})

    def contracts(self) -> list[TableContract]:
        """As ``[*load_contracts(directory), *contracts_from_lake(lake)]``: a broken file raises."""
        return self.read().valid()

    def read(self) -> ContractSet:
        """The contracts of both places, and why each broken file is (its table's others are still read)."""
        published = [f for f in self._lake.list(f"{LAKE_CONTRACTS}/") if f.path.endswith(".avsc")]
        stamp = (_file_stamps(_contract_files(self._directory)), tuple((f.path, f.version) for f in published))
        if stamp != self._stamp:
            repository, lake = _read_contracts(self._directory), _contracts_at(self._lake, [f.path for f in published])
            self._read = ContractSet([*repository.contracts, *lake.contracts], {**lake.broken, **repository.broken})
            self._stamp = stamp  # a file changed since it was stamped is read again at the next call
        return self._read


def _file_stamps(paths: list[Path]) -> tuple[tuple[str, int, int, int], ...]:
    """Each file's identity and version: a rewrite (``write_contract`` replaces the file) changes the inode."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed since it was listed
            continue
        stamps.append((str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)
