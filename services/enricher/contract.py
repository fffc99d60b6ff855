"""The table contract of the enricher's output, ``enriched.transactions``, derived from its inputs' contracts.

The output is one description: ``schemas/enriched.transactions.avsc``, a table contract like the captured
tables' (written by ``cdcflow schemas generate``), so the lake writer, the loader and silver take the
enriched topic like any other. Its columns are derived here, never written by hand:

- every column of ``lending.transactions``, as captured;
- the change's input coordinates: ``source_topic``, ``source_partition``, ``source_offset``;
- ``released_by``, then per side (customer, facility) its join state, the LSN and commit time of the
  version joined, and the attributes the enricher keeps (:data:`services.enricher.events.TABLE_ATTRIBUTES`),
  typed as in the side's contract and named ``<side>_<attribute>`` (``customer_type`` stays as it is).

The change itself — op, LSN, commit time, txId — rides in the Debezium envelope around the row
(:func:`services.enricher.join.enriched_value`), where the writer reads it for every topic.
"""

from __future__ import annotations

from dataclasses import replace

from services.common.contracts import Column, TableContract
from services.common.contracts.compat import evolve
from services.common.contracts.model import Semantic
from services.enricher.events import TABLE_ATTRIBUTES

__all__ = [
    "INPUTS",
    "PRODUCED_BY",
    "SCHEMA",
    "SIDES",
    "TABLE",
    "derive",
    "enriched_contract",
    "side_columns",
]

PRODUCED_BY = "cdcflow enrich"
SCHEMA, TABLE = "enriched", "transactions"
INPUTS = ("transactions", "customers", "facilities")
"""The ``lending`` tables whose contracts the output's is derived from."""
SIDES = (("customer", "customers"), ("facility", "facilities"))
"""Each side's column prefix and table."""


def side_columns(prefix: str, table: str) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """The output's columns of one side: join state, LSN, commit time, and (attribute, column) pairs."""
    attributes = tuple((n, n if n.startswith(prefix) else f"{prefix}_{n}") for n in TABLE_ATTRIBUTES[table])
    return f"{prefix}_join", f"{prefix}_lsn", f"{prefix}_committed_at_ms", attributes


def _own(name: str, semantic: Semantic, *, nullable: bool = True) -> Column:
    # the enricher's own columns have no PostgreSQL type: the doc shows the semantic instead
    return Column(name, semantic, "", nullable=nullable)


def _side(prefix: str, side: TableContract) -> list[Column]:
    join, lsn, committed_at, attributes = side_columns(prefix, side.table)
    columns = [_own(join, "string", nullable=False), _own(lsn, "int64"), _own(committed_at, "int64")]
    for attribute, column in attributes:
        # NULL unless the side joined a live version, whatever the side's own column allows
        columns.append(replace(side.column(attribute), name=column, nullable=True))
    return columns


def enriched_contract(
    transactions: TableContract, customers: TableContract, facilities: TableContract
) -> TableContract:
    """The output's contract (version 1) for these input contracts; see the module docstring."""
    sides = {"customers": customers, "facilities": facilities}
    columns = [
        *transactions.columns,
        _own("source_topic", "string", nullable=False),
        _own("source_partition", "int32", nullable=False),
        _own("source_offset", "int64", nullable=False),
        _own("released_by", "string", nullable=False),
        *(column for prefix, table in SIDES for column in _side(prefix, sides[table])),
    ]
    return TableContract(
        SCHEMA,
        TABLE,
        tuple(columns),
        transactions.primary_key,
        doc=(
            f"A change of {transactions.qualified_name} joined with its customer and facility as of the change's "
            f"LSN ({PRODUCED_BY}): the topic <prefix>.{SCHEMA}.{TABLE}, Debezium envelopes whose source block is "
            "the transaction change's, written in Kafka transactions (read with isolation.level=read_committed). "
            "Derived from the input contracts (services/enricher/contract.py); docs/architecture.md, "
            '"The enricher", says what each column means.'
        ),
        # a delete's before image is the transaction's, so it is as complete as the input's
        replica_identity=transactions.replica_identity,
        produced_by=PRODUCED_BY,
    )


def derive(contracts: list[TableContract]) -> TableContract | None:
    """The output's contract from the primary source's ``lending`` contracts among ``contracts`` (the files of
    schemas/), as the next version of the output's contract there when its columns changed; None without
    all three inputs."""
    primary = {(c.schema, c.table): c for c in contracts if not c.source}
    inputs = [primary.get(("lending", table)) for table in INPUTS]
    if any(c is None for c in inputs):
        return None
    transactions, customers, facilities = (c for c in inputs if c is not None)
    derived = enriched_contract(transactions, customers, facilities)
    current = primary.get((SCHEMA, TABLE))
    return evolve(current, derived) if current is not None else derived
