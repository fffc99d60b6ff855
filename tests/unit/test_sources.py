"""Every connector file is a source: its topic prefix, the source its contracts carry, its database."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.settings import load_settings
from services.stack.sources import sources, topic_prefixes


def _connector(folder: Path, name: str, **config: str) -> None:
    (folder / "connectors").mkdir(parents=True, exist_ok=True)
    (folder / "connectors" / f"{name}.json").write_text(json.dumps({"name": name, "config": config}))


def test_the_primary_source_comes_first_and_another_is_named_by_its_prefix(tmp_path: Path) -> None:
    _connector(
        tmp_path,
        "lending",
        **{
            "topic.prefix": "${env:CDCFLOW_KAFKA__TOPIC_PREFIX}",
            "database.hostname": "${env:CDCFLOW_POSTGRES__HOST}",
            "database.port": "${env:CDCFLOW_POSTGRES__PORT}",
            "database.user": "${env:CDCFLOW_POSTGRES__USER}",
            "database.password": "${env:CDCFLOW_POSTGRES__PASSWORD}",
            "database.dbname": "${env:CDCFLOW_POSTGRES__DATABASE}",
            "publication.name": "cdcflow_lending",
        },
    )
    _connector(
        tmp_path,
        "a_shop",
        **{
            "topic.prefix": "shop",
            "database.hostname": "db.example",
            "database.port": "6543",
            "database.user": "reader",
            "database.password": "p@ss/word",
            "database.dbname": "shop",
            "publication.name": "cdcflow_shop",
        },
    )
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path), "CDCFLOW_POSTGRES__DATABASE": "lending"})
    primary, shop = sources(settings)
    assert (primary.connector, primary.topic_prefix, primary.source) == ("lending", "cdcflow", "")
    assert primary.dsn().endswith(f"@{settings.postgres.host}:{settings.postgres.port}/lending")
    assert (shop.connector, shop.topic_prefix, shop.source, shop.publication) == (
        "a_shop",
        "shop",
        "shop",
        "cdcflow_shop",
    )
    assert shop.dsn() == "postgresql://reader:p%40ss%2Fword@db.example:6543/shop"
    assert topic_prefixes(settings) == ["cdcflow", "shop"]


def test_without_connector_files_there_is_the_stacks_prefix_alone(tmp_path: Path) -> None:
    settings = load_settings({"CDCFLOW_STACK__CONNECT_DIR": str(tmp_path)})
    assert sources(settings) == []
    assert topic_prefixes(settings) == [settings.kafka.topic_prefix]
