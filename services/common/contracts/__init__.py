"""Table contracts: the Avro schemas in ``schemas/`` that fix every captured table's columns and types.

Arrow (lake) and, later, warehouse schemas are derived from a contract, never inferred from data, so every
file of a table has the same types.
"""

from services.common.contracts.arrow import LAKE_METADATA, arrow_schema, lake_schema
from services.common.contracts.model import Column, ContractRegistry, TableContract
from services.common.contracts.store import load_contracts, write_contract

__all__ = [
    "LAKE_METADATA",
    "Column",
    "ContractRegistry",
    "TableContract",
    "arrow_schema",
    "lake_schema",
    "load_contracts",
    "write_contract",
]
