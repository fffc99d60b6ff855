"""The sources: one PostgreSQL database each, captured by one connector file in ``connect/connectors/``.

What the loader and ``cdcflow verify`` need of every source: its topic prefix (where its lake files are), the
``source`` its contracts carry (``""`` for the primary one, under the stack's default prefix) and how to read
its database. Credentials stay ``${env:…}`` references in the files and are filled in as the Connect worker
fills them: from the stack's settings, then from this process's environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

from services.common.naming import source_of
from services.common.settings import Settings
from services.stack.connect import connector_names, load_connector, resolve_env

__all__ = ["Source", "sources", "topic_prefixes"]


@dataclass(frozen=True, slots=True)
class Source:
    connector: str  # the connector file's name
    topic_prefix: str
    source: str  # what its contracts carry: "" for the primary source
    config: dict[str, str]  # the connector's config, ${env:…} references filled in

    @property
    def publication(self) -> str:
        return self.config.get("publication.name", "")

    def dsn(self) -> str:
        """The URI of the source database, as the connector reaches it."""
        c = self.config
        user, password = quote(c.get("database.user", "")), quote(c.get("database.password", ""), safe="")
        host, port, database = (
            c.get("database.hostname", ""),
            c.get("database.port", "5432"),
            c.get("database.dbname", ""),
        )
        return f"postgresql://{user}:{password}@{host}:{port}/{quote(database)}"


def sources(settings: Settings) -> list[Source]:
    """Every connector file's source, the primary one first; none when there is no ``connect/`` folder."""
    connect_dir = settings.stack.connect_dir
    if not (connect_dir / "connectors").is_dir():
        return []
    env = {**os.environ, **settings.connector_env()}
    primary = settings.kafka.primary_prefix or settings.kafka.topic_prefix
    found = []
    for name in connector_names(connect_dir):
        config = {key: resolve_env(value, env) for key, value in load_connector(connect_dir, name).items()}
        prefix = config.get("topic.prefix", "")
        found.append(Source(name, prefix, source_of(prefix, primary), config))
    return sorted(found, key=lambda s: (s.source != "", s.source, s.connector))


def topic_prefixes(settings: Settings) -> list[str]:
    """The stack's topic prefix, then every other source's: where the lake holds their files."""
    prefixes = [settings.kafka.primary_prefix or settings.kafka.topic_prefix]
    return prefixes + sorted({s.topic_prefix for s in sources(settings)} - set(prefixes))
