"""Lake paths: the layout of DESIGN.md, and hostile names that must never leave their folder."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.common.lake import (
    LakeLayout,
    LocalLake,
    NotALakeFileError,
    UnsafePathError,
    open_lake,
    parse_gcs_root,
    validate_prefix,
    validate_relative_path,
)
from services.common.settings import LakeSettings

DAY = datetime.date(2024, 3, 7)

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "../etc",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    ".hidden",
    "a\nb",
    "a\tb",
    "a\x7fb",
    "a b",
    "a.b",
    "a:b",
    "*",
    "~root",
    "%2e%2e",
    "tab;le",
    "caf\u00e9",
    "x" * 128,
]

HOSTILE_PATHS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/..",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\..\\b",
    "C:\\lake",
    "a\x00b",
    "a/\nb",
    ".tmp-1234-p0.parquet",
    "a/.tmp-1234",
    "a/b c",
    "caf\u00e9/x",
    "a/" + "x" * 256,
]


def _path(  # noqa: PLR0917 - the layout's parts, positionally for short tests
    prefix: str = "p",
    schema: str = "s",
    table: str = "t",
    day: datetime.date = DAY,
    hour: int = 0,
    partition: int = 0,
    first: int = 0,
    last: int | None = None,
) -> str:
    return LakeLayout.path_for(
        prefix,
        schema,
        table,
        dt=day,
        hour=hour,
        partition=partition,
        first_offset=first,
        last_offset=first if last is None else last,
    )


def test_layout_matches_the_design() -> None:
    path = _path("cdcflow", "public", "customers", DAY, 5, 3, 42, 97)
    assert path == (
        "cdcflow/public.customers/dt=2024-03-07/hour=05/p3-00000000000000000042-00000000000000000097.parquet"
    )


@pytest.mark.parametrize(
    ("hour", "partition", "offset", "tail"),
    [
        (0, 0, 0, "hour=00/p0-00000000000000000000-00000000000000000000.parquet"),
        (9, 12, 123_456_789, "hour=09/p12-00000000000123456789-00000000000123456789.parquet"),
        (23, 5, 10**20 - 1, "hour=23/p5-99999999999999999999-99999999999999999999.parquet"),
    ],
)
def test_hours_and_offsets_are_zero_padded(hour: int, partition: int, offset: int, tail: str) -> None:
    assert _path("cdcflow", "public", "t", DAY, hour, partition, offset).endswith(tail)


def test_dates_are_zero_padded() -> None:
    assert "/dt=0999-01-02/" in _path(day=datetime.date(999, 1, 2))


def test_name_order_is_offset_order() -> None:
    """The loader lists files in path order; padding makes that the order they were written in."""
    offsets = [0, 9, 10, 99, 100, 1_000_000]
    paths = [_path(hour=1, first=offset, last=offset + 5) for offset in offsets]
    assert sorted(paths) == paths


def test_a_different_cut_is_a_different_name() -> None:
    """A zombie's shorter batch never replaces the file of the partition's new owner."""
    assert _path(first=100, last=150) != _path(first=100, last=180)
    assert _path(first=100, last=150) == _path(first=100, last=150)


def test_dollar_underscore_and_dash_are_allowed() -> None:
    assert _path("cdc-flow_1", "my$schema", "order_items-v2", hour=1).startswith("cdc-flow_1/my$schema.order_items-v2/")


@pytest.mark.parametrize("role", ["topic_prefix", "schema", "table"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_rejected(role: str, name: str) -> None:
    names = {"topic_prefix": "cdcflow", "schema": "public", "table": "customers", role: name}
    with pytest.raises(UnsafePathError) as excinfo:
        _path(names["topic_prefix"], names["schema"], names["table"])
    message = str(excinfo.value)
    assert role in message
    assert repr(name)[:40] in message


@pytest.mark.parametrize(
    ("hour", "partition", "first", "last"),
    [(-1, 0, 0, 0), (24, 0, 0, 0), (0, -1, 0, 0), (0, 0, -1, 0), (0, 0, 10**20, 10**20), (0, 0, 5, 4)],
)
def test_numbers_out_of_range_are_value_errors(hour: int, partition: int, first: int, last: int) -> None:
    with pytest.raises(ValueError, match="must"):
        _path(hour=hour, partition=partition, first=first, last=last)


def test_a_datetime_is_not_a_date() -> None:
    """A datetime would be truncated silently, hiding a time-zone mistake in the caller."""
    moment = datetime.datetime(2024, 3, 7, 23, 30, tzinfo=datetime.UTC)
    with pytest.raises(TypeError, match="date"):
        _path(day=moment, hour=23)


@pytest.mark.parametrize(
    ("prefix", "schema", "table", "hour", "partition", "first", "last"),
    [
        ("cdcflow", "public", "customers", 5, 3, 42, 97),
        ("cdc-flow_1", "my$schema", "order_items-v2", 0, 0, 0, 0),
        ("p", "s", "t-2", 23, 11, 10**20 - 2, 10**20 - 1),
    ],
)
def test_parse_reads_back_what_path_for_wrote(  # noqa: PLR0917 - one case per layout part
    prefix: str, schema: str, table: str, hour: int, partition: int, first: int, last: int
) -> None:
    path = _path(prefix, schema, table, DAY, hour, partition, first, last)
    slot = LakeLayout.parse(path)
    assert (slot.topic_prefix, slot.schema, slot.table, slot.dt, slot.hour, slot.partition) == (
        prefix,
        schema,
        table,
        DAY,
        hour,
        partition,
    )
    assert (slot.first_offset, slot.last_offset, slot.path) == (first, last, path)
    assert slot.table_folder == f"{prefix}/{schema}.{table}"
    assert slot.holds(first)
    assert slot.holds(last)
    assert not slot.holds(first - 1)
    assert not slot.holds(last + 1)


def test_files_named_before_the_last_offset_still_parse() -> None:
    slot = LakeLayout.parse("cdcflow/public.customers/dt=2024-03-07/hour=05/p3-00000000000000000042.parquet")
    assert (slot.partition, slot.first_offset, slot.last_offset) == (3, 42, None)
    assert slot.holds(10**6)
    assert not slot.holds(41)


@pytest.mark.parametrize(
    "path",
    [
        "cdcflow/public.customers/whatever.parquet",
        "cdcflow/public.customers/dt=2024-03-07/hour=05/p3-42.parquet",
        "cdcflow/public.customers/dt=2024-02-30/hour=05/p3-00000000000000000042.parquet",
        "cdcflow/public.customers/dt=2024-03-07/hour=24/p3-00000000000000000042.parquet",
        "cdcflow/customers/dt=2024-03-07/hour=05/p3-00000000000000000042.parquet",
        "a/b/public.customers/dt=2024-03-07/hour=05/p3-00000000000000000042.parquet",
        "cdcflow/public.customers/dt=2024-03-07/hour=05/p3-00000000000000000042-00000000000000000041.parquet",
        "cdcflow/public.cu stomers/dt=2024-03-07/hour=05/p3-00000000000000000042.parquet",
    ],
)
def test_parse_refuses_what_the_writer_cannot_have_written(path: str) -> None:
    with pytest.raises(NotALakeFileError, match=r"not a lake file path|names no real date"):
        LakeLayout.parse(path)


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_relative_paths_are_rejected(path: str) -> None:
    with pytest.raises(UnsafePathError, match="unsafe lake path"):
        validate_relative_path(path)


@pytest.mark.parametrize(
    "path", ["a", "cdcflow/public.customers/dt=2024-03-07/hour=05/p3-00000000000000000042.parquet", "_archive/x"]
)
def test_safe_relative_paths_pass_through(path: str) -> None:
    assert validate_relative_path(path) == path


@pytest.mark.parametrize("prefix", ["", "cdcflow", "cdcflow/", "cdcflow/public.customers/dt=2024-03"])
def test_prefixes_may_be_partial(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/cdcflow", "../", "a//", "a/../", ".tmp-", "a\\"])
def test_hostile_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(UnsafePathError, match="unsafe lake prefix"):
        validate_prefix(prefix)


@pytest.mark.parametrize(
    ("root", "bucket", "prefix"),
    [
        ("gs://lake-bucket", "lake-bucket", ""),
        ("gs://lake-bucket/", "lake-bucket", ""),
        ("gs://b.example/a/b/", "b.example", "a/b"),
    ],
)
def test_gcs_roots_are_parsed(root: str, bucket: str, prefix: str) -> None:
    assert parse_gcs_root(root) == (bucket, prefix)


@pytest.mark.parametrize(
    "root",
    [
        "",
        "/var/lake",
        "s3://bucket/x",
        "gs://",
        "gs://Upper_Case",
        "gs://ab",
        "gs://user@bucket/x",
        "gs://bucket:443/x",
        "gs://bucket/../x",
        "gs://bucket/a//b",
        "gs://bucket/x?y=1",
    ],
)
def test_bad_gcs_roots_are_config_errors(root: str) -> None:
    with pytest.raises(ConfigError):
        parse_gcs_root(root)


def test_local_root_falls_back_to_the_default(tmp_path: Path) -> None:
    lake = open_lake(LakeSettings(), default_root=str(tmp_path / "lake"))
    assert isinstance(lake, LocalLake)
    assert lake.root == (tmp_path / "lake").resolve()


def test_local_root_may_be_a_file_uri(tmp_path: Path) -> None:
    lake = open_lake(LakeSettings(root=(tmp_path / "my lake").as_uri()), default_root="unused")
    assert isinstance(lake, LocalLake)
    assert lake.root == (tmp_path / "my lake").resolve()


@pytest.mark.parametrize(
    "settings",
    [
        LakeSettings(backend="local", root="gs://bucket/x"),
        LakeSettings(backend="gcs", root="/var/lake"),
        LakeSettings(backend="gcs", root="gs://bucket", gcs_endpoint="127.0.0.1:9023"),
    ],
)
def test_roots_that_do_not_fit_the_backend_are_config_errors(settings: LakeSettings) -> None:
    with pytest.raises(ConfigError):
        open_lake(settings, default_root="")
