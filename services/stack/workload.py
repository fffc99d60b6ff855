"""A seeded, reproducible mix of inserts, updates and deletes against the demo lending schema.

The same seed against the same starting data produces the same sequence of operations. Each operation
is its own transaction, paced to the requested rate; a facility's outstanding balance moves together
with the disbursal or payment that changes it, in one transaction.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from services.common.settings import PostgresSettings

__all__ = ["Workload", "WorkloadResult"]

_CENT = Decimal("0.01")
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman"]
_SECTORS = ["retail", "agriculture", "logistics", "software", "healthcare", "construction"]


@dataclass(slots=True)
class WorkloadResult:
    operations: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.operations.values())


@dataclass(slots=True)
class _Ids:
    customers: list[int] = field(default_factory=list)
    facilities: list[int] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)


class Workload:
    """Writes ``rate`` operations per second for ``duration_s`` seconds (or ``max_ops`` operations)."""

    def __init__(self, settings: PostgresSettings, *, seed: int, toast_bytes: int = 12_000) -> None:
        self._settings = settings
        self._seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
        self._toast_bytes = toast_bytes
        self._ids = _Ids()
        self._mix: list[tuple[Callable[[psycopg.Connection[tuple[object, ...]]], str], int]] = [
            (self._insert_customer, 10),
            (self._update_customer, 14),
            (self._rewrite_notes, 2),
            (self._insert_facility, 10),
            (self._review_facility, 12),
            (self._change_facility_status, 5),
            (self._insert_transaction, 38),
            (self._reverse_transaction, 6),
            (self._delete_customer, 3),
        ]

    def run(
        self,
        rate: float,
        duration_s: float,
        max_ops: int | None = None,
        *,
        stopped: Callable[[], bool] | None = None,
    ) -> WorkloadResult:
        """``stopped`` is asked before each operation: True ends the run early (after a committed operation)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        result = WorkloadResult()
        with psycopg.connect(self._settings.dsn(), autocommit=False) as conn:
            self._load_ids(conn)
            # Same seed, same starting data → same operations; a second run on grown data differs (and
            # so does not collide with the unique values of the first).
            ids = self._ids
            self._rng.seed(f"{self._seed}/{ids.customers[-1:]}/{ids.facilities[-1:]}/{ids.transactions[-1:]}")
            began = time.monotonic()
            deadline = began + duration_s
            functions, weights = zip(*self._mix, strict=True)
            while time.monotonic() < deadline and (max_ops is None or result.total < max_ops):
                due = began + result.total / rate
                if (ahead := due - time.monotonic()) > 0:
                    time.sleep(ahead)
                if stopped is not None and stopped():
                    break
                operation = self._rng.choices(functions, weights)[0]
                kind = operation(conn)
                conn.commit()
                result.operations[kind] += 1
            result.seconds = time.monotonic() - began
        return result

    def _load_ids(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        def ids(sql: str) -> list[int]:
            return [int(str(row[0])) for row in conn.execute(sql).fetchall()]

        self._ids.customers = ids("select customer_id from lending.customers order by 1")
        self._ids.facilities = ids("select facility_id from lending.facilities order by 1")
        self._ids.transactions = ids("select transaction_id from lending.transactions order by 1")
        conn.commit()

    # --- operations: each returns the name it is counted under --------------------------------

    def _insert_customer(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        rng = self._rng
        business = rng.random() < 0.3
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        row = conn.execute(
            "insert into lending.customers (external_ref, full_name, email, status, customer_type,"
            " date_of_birth, credit_limit, profile, notes) values (%s, %s, %s, 'ACTIVE', %s, %s, %s, %s, %s)"
            " returning customer_id",
            (
                uuid.UUID(int=rng.getrandbits(128), version=4),
                name + (" Ltd" if business else ""),
                f"{name.replace(' ', '.').lower()}.{rng.randrange(10**6)}@example.com",
                "BUSINESS" if business else "INDIVIDUAL",
                None if business else date(1950, 1, 1) + timedelta(days=rng.randrange(20_000)),
                self._money(1_000, 250_000),
                Jsonb({"sector": rng.choice(_SECTORS), "score": rng.randrange(300, 851)}),
                self._toast_text(),
            ),
        ).fetchone()
        assert row is not None
        self._ids.customers.append(int(str(row[0])))
        return "insert_customer"

    def _update_customer(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        """Touches small columns only: the TOASTed notes reach Debezium as the unavailable placeholder."""
        if not self._ids.customers:
            return self._insert_customer(conn)
        status = self._rng.choices(["ACTIVE", "INACTIVE", "SUSPENDED"], [70, 20, 10])[0]
        conn.execute(
            "update lending.customers set status = %s, credit_limit = %s, updated_at = now() where customer_id = %s",
            (status, self._money(1_000, 250_000), self._rng.choice(self._ids.customers)),
        )
        return "update_customer"

    def _rewrite_notes(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.customers:
            return self._insert_customer(conn)
        conn.execute(
            "update lending.customers set notes = %s, updated_at = now() where customer_id = %s",
            (self._toast_text(), self._rng.choice(self._ids.customers)),
        )
        return "rewrite_notes"

    def _insert_facility(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.customers:
            return self._insert_customer(conn)
        rng = self._rng
        principal = self._money(5_000, 2_000_000)
        originated = date(2020, 1, 1) + timedelta(days=rng.randrange(2_000))
        row = conn.execute(
            "insert into lending.facilities (customer_id, facility_type, principal_amount, outstanding_balance,"
            " interest_rate, status, originated_on, maturity_date) values (%s, %s, %s, %s, %s, 'ACTIVE', %s, %s)"
            " returning facility_id",
            (
                rng.choice(self._ids.customers),
                rng.choice(["TERM_LOAN", "REVOLVING", "MORTGAGE"]),
                principal,
                principal,
                Decimal(rng.randrange(150, 1_800)) / 100,
                originated,
                originated + timedelta(days=365 * rng.randrange(1, 30)),
            ),
        ).fetchone()
        assert row is not None
        self._ids.facilities.append(int(str(row[0])))
        return "insert_facility"

    def _review_facility(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.facilities:
            return self._insert_facility(conn)
        conn.execute(
            "update lending.facilities set last_reviewed_at = localtimestamp, interest_rate = %s,"
            " updated_at = now() where facility_id = %s",
            (Decimal(self._rng.randrange(150, 1_800)) / 100, self._rng.choice(self._ids.facilities)),
        )
        return "review_facility"

    def _change_facility_status(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.facilities:
            return self._insert_facility(conn)
        status = self._rng.choices(["CLOSED", "DEFAULTED", "ACTIVE"], [60, 15, 25])[0]
        conn.execute(
            "update lending.facilities set status = %s, updated_at = now() where facility_id = %s",
            (status, self._rng.choice(self._ids.facilities)),
        )
        return "change_facility_status"

    def _insert_transaction(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.facilities:
            return self._insert_facility(conn)
        rng = self._rng
        facility_id = rng.choice(self._ids.facilities)
        found = conn.execute(
            "select customer_id, outstanding_balance from lending.facilities where facility_id = %s for update",
            (facility_id,),
        ).fetchone()
        if found is None:  # deleted with its customer
            self._ids.facilities.remove(facility_id)
            return self._insert_facility(conn)
        customer_id, outstanding = int(str(found[0])), Decimal(str(found[1]))
        kind = rng.choices(["DEPOSIT", "WITHDRAWAL", "DISBURSAL", "PAYMENT"], [30, 20, 20, 30])[0]
        amount = self._money(10, 20_000)
        if kind == "PAYMENT":
            amount = min(amount, outstanding) if outstanding > 0 else amount
        delta = {"DISBURSAL": amount, "PAYMENT": -amount}.get(kind, Decimal(0))
        if outstanding + delta < 0:
            delta = -outstanding
        foreign = rng.random() < 0.2
        row = conn.execute(
            "insert into lending.transactions (facility_id, customer_id, transaction_type, amount, currency,"
            " exchange_rate, value_date, reference) values (%s, %s, %s, %s, %s, %s, current_date, %s)"
            " returning transaction_id",
            (
                facility_id,
                customer_id,
                kind,
                max(amount, _CENT),
                rng.choice(["EUR", "GBP", "CHF"]) if foreign else "USD",
                Decimal(rng.randrange(5 * 10**8, 2 * 10**9)) / 10**9 if foreign else None,
                f"TX-{rng.getrandbits(40):010x}",
            ),
        ).fetchone()
        assert row is not None
        self._ids.transactions.append(int(str(row[0])))
        if delta:
            conn.execute(
                "update lending.facilities set outstanding_balance = outstanding_balance + %s, updated_at = now()"
                " where facility_id = %s",
                (delta, facility_id),
            )
        return "insert_transaction"

    def _reverse_transaction(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        if not self._ids.transactions:
            return self._insert_transaction(conn)
        transaction_id = self._ids.transactions.pop(self._rng.randrange(len(self._ids.transactions)))
        conn.execute("delete from lending.transactions where transaction_id = %s", (transaction_id,))
        return "delete_transaction"

    def _delete_customer(self, conn: psycopg.Connection[tuple[object, ...]]) -> str:
        """Deletes cascade to the customer's facilities and transactions (each its own delete event)."""
        if len(self._ids.customers) < 20:
            return self._insert_customer(conn)
        customer_id = self._ids.customers.pop(self._rng.randrange(len(self._ids.customers)))
        gone_facilities = {
            int(str(row[0]))
            for row in conn.execute(
                "select facility_id from lending.facilities where customer_id = %s", (customer_id,)
            ).fetchall()
        }
        gone_transactions = {
            int(str(row[0]))
            for row in conn.execute(
                "select transaction_id from lending.transactions where customer_id = %s", (customer_id,)
            ).fetchall()
        }
        conn.execute("delete from lending.customers where customer_id = %s", (customer_id,))
        self._ids.facilities = [f for f in self._ids.facilities if f not in gone_facilities]
        self._ids.transactions = [t for t in self._ids.transactions if t not in gone_transactions]
        return "delete_customer"

    # --- values ---------------------------------------------------------------------------------

    def _money(self, low: int, high: int) -> Decimal:
        return (Decimal(self._rng.randrange(low * 100, high * 100)) * _CENT).quantize(_CENT)

    def _toast_text(self) -> str:
        """Incompressible text well above the TOAST threshold, so it is stored out of line."""
        raw = self._rng.getrandbits(self._toast_bytes * 6).to_bytes(self._toast_bytes * 6 // 8, "big")
        return base64.b64encode(raw).decode()[: self._toast_bytes]
