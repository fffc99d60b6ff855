"""Warehouse names of captured tables, unique across every source (docs/architecture.md, "Names across sources").

A *source* is one connector file: one PostgreSQL database with its own topic prefix. The *primary* source is
the one whose prefix is the stack's default (``KafkaSettings.topic_prefix``); a contract of the primary
source has ``source == ""``, any other contract names its source by its topic prefix.

A name is the ``__``-joined parts, when every part is *plain* — lower-case letters and digits in runs joined
by single underscores, at most :data:`MAX_PLAIN_PART` characters — so that the parts can be read back:

=========  ============================  ==========================
           bronze                        silver
=========  ============================  ==========================
primary    ``<schema>__<table>``         ``<table>``
other      ``<P>__<schema>__<table>``    ``<P>__<table>``
produced   ``<schema>__<table>``         ``<schema>__<table>``
=========  ============================  ==========================

A *produced* table is one a cdcflow service writes (``enriched.transactions``, by ``cdcflow enrich``) under the
primary source's prefix: it is named like a table of a source whose topic prefix is its schema, so a source
with topic prefix ``enriched`` that captures a ``transactions`` table would take the same silver name, and
silver generation leaves both out loudly, as it does one table name in two schemas of a source.

Any other name (a part with ``__``, an edge ``_``, an upper-case letter — DuckDB matches names without
regard to case —, a ``$``, a ``-`` or ``.`` of a topic prefix, or a table named like a hash suffix) becomes
the parts' *labels* joined the same way plus ``__h<12 hex digits of SHA-256 over the parts>``. The forms
cannot meet: a plain name has exactly one part per role, none ending the name as ``h`` and 12 hex digits; a
hashed one always does, and the digest tells hashed names apart. Every name holds only ``[a-z0-9_]`` and
fits BigQuery's 1,024 characters: a BigQuery table name, and a DuckDB one once quoted (as the backends quote
every name; it may start with a digit). Names are lower case because DuckDB matches them without regard to
case, so ``public.Users`` and ``public.users`` must not become ``public__Users`` and ``public__users``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

__all__ = [
    "MAX_NAME",
    "MAX_PLAIN_PART",
    "PRIMARY",
    "bronze_name",
    "is_plain",
    "label",
    "silver_name",
    "source_of",
]

PRIMARY = ""
"""The ``source`` of the primary source's contracts: their names carry no prefix."""

MAX_NAME = 1024
"""BigQuery's limit on a table name; DuckDB has none."""

MAX_PLAIN_PART = 255
"""A longer part is shortened in its label, so a name is hashed; PostgreSQL names stop at 63 bytes."""

_PLAIN = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_HASH_SUFFIX = re.compile(r"h[0-9a-f]{12}")
_NOT_LABEL = re.compile(r"[^a-z0-9_]")
_DIGEST_HEX = 12


def source_of(topic_prefix: str, primary_prefix: str) -> str:
    """The ``source`` of the contracts of the tables captured under ``topic_prefix``."""
    return PRIMARY if topic_prefix == primary_prefix else topic_prefix


def is_plain(part: str) -> bool:
    """Lower-case letters and digits in runs joined by single underscores: no ``__``, no edge ``_``."""
    return len(part) <= MAX_PLAIN_PART and _PLAIN.fullmatch(part) is not None


def label(part: str) -> str:
    """``part`` as a name part: lower case, every character but a letter, digit or ``_`` becomes ``_``."""
    return _NOT_LABEL.sub("_", part.lower())[:MAX_PLAIN_PART]


def _name(parts: Sequence[str]) -> str:
    if all(is_plain(p) for p in parts) and not _HASH_SUFFIX.fullmatch(parts[-1]):
        return "__".join(parts)
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:_DIGEST_HEX]
    return "__".join([*(label(p) for p in parts), f"h{digest}"])


def bronze_name(source: str, schema: str, table: str) -> str:
    """The table's name in ``bronze``: ``<schema>__<table>``, ``<P>__<schema>__<table>`` or hashed."""
    return _name((schema, table) if source == PRIMARY else (source, schema, table))


def silver_name(source: str, table: str, *, produced_in: str | None = None) -> str:
    """The table's name in ``silver``: ``<table>``, ``<P>__<table>`` or hashed.

    ``produced_in``: the schema of a table a cdcflow service produces rather than captures, which keeps it
    in the name (``<schema>__<table>``; with another source's prefix ``<P>__<schema>__<table>``), so the
    enricher's ``enriched.transactions`` does not take ``lending.transactions``' name.

    A source holding one table name in two schemas gets one silver name for both; silver generation
    leaves both out loudly rather than merge them (services.transform.silver.left_out).
    """
    parts = (table,) if produced_in is None else (produced_in, table)
    return _name(parts if source == PRIMARY else (source, *parts))
