"""Settings from the environment (``CDCFLOW_…``, ``__`` for nesting) and from mounted secret files.

Every service reads one :class:`Settings` through :func:`load_settings`: pydantic-settings' environment source
(over the mapping given) and its secrets-directory source, the variables first. Values are not decoded as JSON:
a list takes the space-separated form its field documents. Values are frozen once loaded; secrets are
``SecretStr`` and :meth:`Settings.safe_dump` is the only form that may be logged.

Its length (past the ~400 lines of most modules): every section of the configuration is declared here, so
one file is the reference of every ``CDCFLOW_*`` variable, and the shared field types are declared once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from services.common.errors import ConfigError
from services.common.naming import source_of

__all__ = [
    "MONITOR_PROBES",
    "ConnectSettings",
    "DlqSettings",
    "EnricherSettings",
    "KafkaSettings",
    "LakeSettings",
    "LoaderSettings",
    "LogSettings",
    "MonitorProbe",
    "MonitorSettings",
    "PostgresSettings",
    "Settings",
    "StackSettings",
    "TransformSettings",
    "WarehouseSettings",
    "WriterSettings",
    "load_settings",
    "repo_root",
]

ENV_PREFIX = "CDCFLOW_"
SECRETS_DIR_ENV = "CDCFLOW_SECRETS_DIR"
HOME_ENV = "CDCFLOW_HOME"  # where connect/, schemas/ and dbt/ are: read by repo_root(), not a setting
DEFAULT_SECRETS_DIR = Path("/run/secrets")
_NOT_SETTINGS = frozenset({SECRETS_DIR_ENV, HOME_ENV})
_MASK = "**********"
_SECRET_KEY = re.compile(r"(password|secret|token|credential|sasl\.|ssl\.key)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KAFKA_NAME = re.compile(r"^[A-Za-z0-9_\-.]+$")
_URL_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def repo_root() -> Path:
    """The folder that holds ``connect/``, ``schemas/`` and ``dbt/``.

    ``CDCFLOW_HOME`` when it is set (an installed package, e.g. the container image, keeps them there); else
    the source tree around ``services/`` when it has them (a checkout, an editable install); else the current
    directory (a wheel installed elsewhere, run from a copy of the project's files).
    """
    home = os.environ.get(HOME_ENV, "")
    if home:
        return Path(home).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "schemas").is_dir():
        return checkout
    return Path.cwd()


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, underscore)")
    return value


def _kafka_name(value: str) -> str:
    if value and not _KAFKA_NAME.match(value):
        raise ValueError(
            "may hold only letters, digits, '.', '_' and '-' (it names Kafka groups, topics, transactions)"
        )
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if value and (parts.scheme not in {"http", "https"} or not parts.hostname):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def _words(value: object) -> object:
    return value.split() if isinstance(value, str) else value


def _words_or_commas(value: object) -> object:
    return value.replace(",", " ").split() if isinstance(value, str) else value


_Identifier = Annotated[str, AfterValidator(_identifier)]
"""A plain SQL identifier (a role, a database, a BigQuery dataset): it is put into statements unquoted."""
_KafkaName = Annotated[str, AfterValidator(_kafka_name)]
"""A consumer group or instance id: empty, or the characters a Kafka topic or transactional id may hold."""
_HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""Empty, or an http(s) URL, kept without its trailing slash."""
_Words = Annotated[list[str], BeforeValidator(_words)]
"""A list, given in a variable space-separated (``CDCFLOW_TRANSFORM__SELECT="silver +fct_payments"``): dbt
selectors and regexes may hold commas."""
_HealthPort = Annotated[int, Field(ge=0, le=65535)]
"""The port of a service's /healthz, /readyz and /metrics; 0 turns the endpoint off."""


def _contracts_dir() -> Any:
    """The field of where the repository's contracts are: every service that reads them has the same default."""
    return Field(default_factory=lambda: repo_root() / "schemas")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostgresSettings(_Frozen):
    """How to reach the captured PostgreSQL database (and, locally, where the stack starts it)."""

    host: str = "127.0.0.1"
    port: int = Field(default=15432, ge=1, le=65535)
    user: _Identifier = "cdcflow"
    password: SecretStr = SecretStr("cdcflow")
    database: _Identifier = "lending"
    # The writer reads table definitions (pg_catalog only) as this role, never as the owner above: a login
    # with CONNECT and read-only transactions, no privilege on any table (README: "Capture your own database").
    catalog_user: _Identifier = "cdcflow_catalog"
    catalog_password: SecretStr = SecretStr("cdcflow_catalog")

    def dsn(self, *, with_password: bool = True) -> str:
        """A libpq URI; without the password it is safe to print."""
        return self._uri(self.user, self.password, with_password=with_password)

    def catalog_dsn(self, *, with_password: bool = True) -> str:
        """The URI of the read-only catalog role, for the writer's table lookups."""
        return self._uri(self.catalog_user, self.catalog_password, with_password=with_password)

    def _uri(self, user: str, password: SecretStr, *, with_password: bool) -> str:
        secret = password.get_secret_value() if with_password else _MASK
        return f"postgresql://{quote(user)}:{quote(secret, safe='*')}@{self.host}:{self.port}/{quote(self.database)}"


class KafkaSettings(_Frozen):
    """Kafka clients. ``extra`` is passed straight to librdkafka (security, tuning)."""

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = "cdcflow"
    # The stack's default topic prefix when this process serves another source under topic_prefix (a lake
    # writer per source); empty: topic_prefix is the primary source's. Names across sources:
    # docs/architecture.md.
    primary_prefix: str = ""
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("topic_prefix", "primary_prefix")
    @classmethod
    def _prefix(cls, value: str, info: ValidationInfo) -> str:
        if (value or info.field_name == "topic_prefix") and not re.match(r"^[A-Za-z0-9_\-]+$", value):
            raise ValueError(f"{info.field_name} may hold only letters, digits, '_' and '-'")
        return value

    def source(self) -> str:
        """The ``source`` of the contracts of the tables under ``topic_prefix``: ``""`` for the primary one."""
        return source_of(self.topic_prefix, self.primary_prefix or self.topic_prefix)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bootstrap server {server!r} is not host:port")
        return value

    @field_validator("extra")
    @classmethod
    def _librdkafka_keys(cls, value: dict[str, str]) -> dict[str, str]:
        # Variables cannot hold dots: CDCFLOW_KAFKA__EXTRA__SECURITY_PROTOCOL means security.protocol
        # (librdkafka property names use dots only).
        return {key.lower().replace("_", "."): val for key, val in value.items()}

    def first_broker(self) -> tuple[str, int]:
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        return host, int(port)


class ConnectSettings(_Frozen):
    """The Kafka Connect REST API that runs the Debezium connector."""

    url: _HttpUrl = Field(default="http://127.0.0.1:18083", min_length=1)
    connector: str = "lending"
    # The local worker's Prometheus JMX exporter (Debezium's streaming and snapshot metrics), on 127.0.0.1;
    # 0 starts the worker without it.
    jmx_exporter_port: int = Field(default=19404, ge=0, le=65535)

    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class StackSettings(_Frozen):
    """The local runtime started by ``cdcflow stack up``."""

    state_dir: Path = Field(default_factory=lambda: repo_root() / ".cdcflow")
    connect_dir: Path = Field(default_factory=lambda: repo_root() / "connect")
    kafka_controller_port: int = Field(default=19093, ge=1, le=65535)
    broker_heap: str = "768m"
    connect_heap: str = "1g"
    start_timeout_s: float = Field(default=180.0, gt=0)


class LakeSettings(_Frozen):
    """Where Parquet files land: a local directory (default) or a GCS bucket."""

    backend: Literal["local", "gcs"] = "local"
    root: str = ""
    gcs_endpoint: str | None = None
    # how long one GCS call retries transient errors (429, 5xx, network) before the caller hears of them
    gcs_retry_deadline_s: float = Field(default=120.0, gt=0)


class WarehouseSettings(_Frozen):
    """Where bronze, silver and gold live: a DuckDB file (default) or BigQuery."""

    backend: Literal["duckdb", "bigquery"] = "duckdb"
    duckdb_path: str = ""
    bigquery_project: str | None = None
    bigquery_location: str = "US"
    # One dataset per layer, named like the DuckDB schemas; staging tables live in a dataset of their own.
    bigquery_bronze_dataset: _Identifier = "bronze"
    bigquery_staging_dataset: _Identifier = "bronze_staging"
    # Empty: Google's endpoint with application default credentials (or the service-account key file below).
    # An http(s) URL (a local emulator): anonymous credentials.
    bigquery_api_endpoint: _HttpUrl = ""
    bigquery_credentials_file: str = ""
    # The lake root as BigQuery reads it (gs://bucket/prefix). Empty: the gcs lake's own gs:// URIs.
    bigquery_lake_uri: str = ""
    bigquery_job_timeout_s: float = Field(default=600.0, gt=0)
    bigquery_retry_deadline_s: float = Field(default=120.0, gt=0)

    @field_validator("bigquery_lake_uri")
    @classmethod
    def _lake_uri(cls, value: str) -> str:
        if value and not value.startswith("gs://"):
            raise ValueError("bigquery_lake_uri must be a gs://bucket/prefix URI")
        return value.rstrip("/")


class WriterSettings(_Frozen):
    """The lake writer (``cdcflow consume``)."""

    # it names the DLQ topic, _cdcflow.dlq.<group_id>
    group_id: _KafkaName = Field(default="cdcflow-lake-writer", min_length=1)
    # native: the Rust consumer (fastest; built when the package was installed with cargo); confluent:
    # confluent_kafka's consumer (any configuration: OAUTHBEARER, GSSAPI, callbacks); auto: native where built
    consumer: Literal["auto", "native", "confluent"] = "auto"
    # native: the Rust JSON reader (built with the consumer); arrow: Arrow's JSON reader (what an install
    # without cargo runs); auto: native where built. Independent of the consumer: both read the same values
    json_reader: Literal["auto", "native", "arrow"] = "auto"
    contracts_dir: Path = _contracts_dir()
    # enriched.transactions, the enricher's output, is landed like a captured table: its contract names its
    # silver table enriched__transactions (docs/architecture.md, "The enricher")
    exclude_tables: _Words = Field(default_factory=lambda: ["cdcflow.heartbeat", "cdcflow.debezium_signal"])
    # regexes over ``schema.table.column``: columns the connector's column.exclude.list leaves out as well
    exclude_columns: _Words = Field(default_factory=list)
    flush_max_rows: int = Field(default=100_000, ge=1)
    flush_max_bytes: int = Field(default=64 << 20, ge=1024)
    flush_max_age_s: float = Field(default=30.0, gt=0)
    buffer_max_bytes: int = Field(default=512 << 20, ge=1 << 20)
    max_value_bytes: int = Field(default=8 << 20, ge=1024)
    poll_batch: int = Field(default=10_000, ge=1, le=1 << 20)  # the consumer reserves a slot per record up front
    poll_timeout_s: float = Field(default=0.5, gt=0, le=1.0)
    grace_s: float = Field(default=30.0, gt=0)
    retry_backoff_s: float = Field(default=1.0, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    health_host: str = "127.0.0.1"
    health_port: _HealthPort = 9464
    worker_id: str = ""
    # "catalog": a column that arrives before its contract is looked up in PostgreSQL's catalog and, if
    # the change is additive, becomes a new contract version; "dlq": such records go to the DLQ.
    schema_evolution: Literal["catalog", "dlq"] = "catalog"
    # Each catalog lookup's connection attempt and queries give up after this long; PostgreSQL out of reach
    # pauses the partitions that need it (retried with backoff), it never sends their records to the DLQ.
    catalog_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # How Kafka Connect serialised the values: JsonConverter, or AvroConverter in the Confluent wire format
    # (writer schemas from the registry below) or in Avro single-object encoding (schemas from contracts).
    value_format: Literal["json", "avro-confluent", "avro-single-object"] = "json"
    schema_registry_url: _HttpUrl | None = None
    # The note of the offsets being decoded and the quarantined records (the crash-loop guard,
    # services/consumer/quarantine.py). Empty: <stack.state_dir>/writer.
    state_dir: str = ""
    # A decode of one batch of records that takes longer (decoding alone, not the I/O around it) is a hang: the
    # process ends (SIGALRM) and the next start quarantines the record responsible. 0: no limit.
    decode_timeout_s: float = Field(default=120.0, ge=0)

    @model_validator(mode="after")
    def _registry_needed(self) -> WriterSettings:
        if self.value_format == "avro-confluent" and not self.schema_registry_url:
            raise ValueError("value_format avro-confluent needs schema_registry_url (the writer schemas live there)")
        return self


class LoaderSettings(_Frozen):
    """The loader (``cdcflow load``)."""

    contracts_dir: Path = _contracts_dir()
    interval_s: float = Field(default=10.0, gt=0)
    max_batch_files: int = Field(default=1_000, ge=1, le=10_000)  # BigQuery takes 10,000 URIs per load job
    max_batch_bytes: int = Field(default=2 << 30, ge=1)
    # BigQuery allows 1,500 load jobs per table per day: with that backend the default is 60 s between loads
    # of a table (see Settings) and the loader warns below 57.6 s; DuckDB has no such quota
    min_table_interval_s: float = Field(default=0.0, ge=0)
    archive_prefix: str = ""  # e.g. "_archive": loaded files move there; empty keeps them in place
    failed_prefix: str = "_failed"
    shard: str = "0/1"
    # Run the transform in this process too (`cdcflow load --with-transform`): on DuckDB, one process then owns
    # the file and loads and dbt no longer wait for each other's lock; silver steps follow the loads.
    with_transform: bool = False
    health_host: str = "127.0.0.1"
    health_port: _HealthPort = 9465

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        index, _, count = value.partition("/")
        if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
            raise ValueError("shard must be I/N with 0 <= I < N, e.g. 0/2")
        return value

    def shard_of(self) -> tuple[int, int]:
        index, _, count = self.shard.partition("/")
        return int(index), int(count)


class TransformSettings(_Frozen):
    """The scheduled dbt runs (``cdcflow transform``) and ``cdcflow verify``."""

    project_dir: Path = Field(default_factory=lambda: repo_root() / "dbt")
    contracts_dir: Path = _contracts_dir()
    # The working copy of the dbt project (with silver rendered from every contract, the repository's and
    # those published in the lake), dbt's target/ and logs/. Empty: <state_dir>/transform.
    work_dir: str = ""
    # The dbt target (a profile output in dbt/profiles.yml). Empty: the warehouse backend. bigquery_adc:
    # BigQuery with application default credentials (Workload Identity), bigquery: with a token.
    target: Literal["", "duckdb", "bigquery", "bigquery_adc"] = ""
    interval_s: float = Field(default=300.0, gt=0)
    # Between full runs, build the silver of the tables whose bronze changed every this many seconds (models
    # only; tests and gold stay with the full runs). 0: silver only in the full runs; in the loader's process
    # (`cdcflow load --with-transform`) 0 means every loader interval.
    silver_every_s: float = Field(default=0.0, ge=0)
    select: _Words = Field(default_factory=list)
    exclude: _Words = Field(default_factory=list)
    threads: int = Field(default=2, ge=1, le=64)
    # The DuckDB file is locked while the loader writes: wait this long (in total) for it before a run fails.
    busy_timeout_s: float = Field(default=60.0, ge=0)
    # BigQuery through dbt-bigquery's `oauth-secrets` method; against an emulator any token works.
    bigquery_token: SecretStr = SecretStr("offline-dummy-token")
    bigquery_api_endpoint: str = ""
    health_host: str = "127.0.0.1"
    health_port: _HealthPort = 9466


class EnricherSettings(_Frozen):
    """The stream-table join (``cdcflow enrich``): transactions joined with customers and facilities."""

    group_id: _KafkaName = "cdcflow-enricher"
    # Fences a zombie: the transactional id is <group_id>.<instance_id>, stable across restarts of one instance
    # (a StatefulSet's pod name). Empty: the host name.
    instance_id: _KafkaName = ""
    # The local table store (LMDB). Empty: <stack.state_dir>/enricher/<group_id>.
    state_dir: str = ""
    store_map_bytes: int = Field(default=4 << 30, ge=1 << 20)
    # Versions kept per customer and per facility (the newest). A transaction read again after a restart, or
    # enriched for the first time long after it was written, needs the versions of its LSN; one older than every
    # version kept is emitted with that side marked "expired".
    max_versions: int = Field(default=64, ge=1, le=10_000)
    # A transaction waits at most this long for the table sides' watermark to pass its LSN, then goes out with
    # the missing side marked.
    max_wait_s: float = Field(default=30.0, ge=0)
    # At most this many changes wait in memory: the input pauses there (tables behind by up to max_wait_s of a
    # busy input) and resumes once half of them went out.
    max_held: int = Field(default=100_000, ge=2)
    # Each Kafka transaction holds at most this many records or this much time.
    commit_max_records: int = Field(default=5_000, ge=1)
    commit_interval_s: float = Field(default=0.5, gt=0)
    poll_batch: int = Field(default=2_000, ge=1, le=1 << 20)
    poll_timeout_s: float = Field(default=0.2, gt=0, le=1.0)
    grace_s: float = Field(default=30.0, gt=0)
    health_host: str = "127.0.0.1"
    health_port: _HealthPort = 9467


MonitorProbe = Literal["kafka", "postgres", "publications", "connect", "warehouse", "transform", "dlq"]
MONITOR_PROBES: tuple[MonitorProbe, ...] = (
    "kafka",
    "postgres",
    "publications",
    "connect",
    "warehouse",
    "transform",
    "dlq",
)


class MonitorSettings(_Frozen):
    """``cdcflow monitor``: lag, slots, connectors, freshness and the DLQ, seen from outside the workers."""

    interval_s: float = Field(default=10.0, gt=0)
    # Consumer groups whose id starts with this are watched (the writer's default is cdcflow-lake-writer),
    # and so are their DLQ topics, _cdcflow.dlq.<group>.
    group_prefix: str = "cdcflow"
    # CDCFLOW_MONITOR__PROBES="kafka postgres": a space- or comma-separated list
    probes: Annotated[list[MonitorProbe], BeforeValidator(_words_or_commas)] = Field(
        default_factory=lambda: list(MONITOR_PROBES)
    )
    # Each request to Kafka, PostgreSQL or Connect gives up after this long; a probe that fails is retried
    # at its next poll and never stops the others.
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Samples of each partition's high watermark kept to date the oldest uncommitted record (one per poll at
    # most): 360 at 10 s cover an hour; older records are dated by reading their timestamp.
    lag_samples: int = Field(default=360, ge=2, le=100_000)
    health_host: str = "127.0.0.1"
    health_port: _HealthPort = 9104


class DlqSettings(_Frozen):
    """The DLQ tool (``cdcflow dlq``)."""

    # The consumer group whose DLQ (_cdcflow.dlq.<group>) the tool reads. Empty: the writer's group_id.
    group_id: _KafkaName = ""
    # A record replayed this many times already is parked (recorded, not replayed again).
    max_replays: int = Field(default=3, ge=1, le=1_000)
    # Records per second a replay republishes at most (--rate overrides it).
    rate: float = Field(default=500.0, gt=0)
    # Each read of a whole topic and each Kafka transaction call gives up after this long.
    timeout_s: float = Field(default=60.0, gt=0)


class LogSettings(_Frozen):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


BIGQUERY_LOAD_JOBS_PER_TABLE_PER_DAY = 1_500
BIGQUERY_MIN_TABLE_INTERVAL_S = 60.0


class Settings(BaseSettings):
    """All of cdcflow's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        # no JSON: a value is the string the variable holds, lists split by their fields (_Words)
        enable_decoding=False,
        frozen=True,
        extra="ignore",
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    connect: ConnectSettings = Field(default_factory=ConnectSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    warehouse: WarehouseSettings = Field(default_factory=WarehouseSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    loader: LoaderSettings = Field(default_factory=LoaderSettings)
    transform: TransformSettings = Field(default_factory=TransformSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    dlq: DlqSettings = Field(default_factory=DlqSettings)
    enricher: EnricherSettings = Field(default_factory=EnricherSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @model_validator(mode="before")
    @classmethod
    def _bigquery_spaces_loads(cls, data: Any) -> Any:
        """With BigQuery, a table is loaded at most once a minute unless configured otherwise."""
        if not isinstance(data, dict):
            return data
        warehouse, loader = data.get("warehouse"), data.get("loader")
        backend = warehouse.get("backend") if isinstance(warehouse, dict) else getattr(warehouse, "backend", None)
        if backend == "bigquery" and isinstance(loader, dict | None) and "min_table_interval_s" not in (loader or {}):
            return {**data, "loader": {**(loader or {}), "min_table_interval_s": BIGQUERY_MIN_TABLE_INTERVAL_S}}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings() reads what load_settings() reads (the process environment and its secret files), below
        # the values passed explicitly
        return (init_settings, *_sources(settings_cls, os.environ))

    def lake_root(self) -> str:
        """The lake root: the configured one, else ``<state_dir>/lake``."""
        return self.lake.root or str(self.stack.state_dir / "lake")

    def writer_state_dir(self) -> Path:
        """The lake writer's own state: ``writer.state_dir``, else ``<state_dir>/writer``."""
        return Path(self.writer.state_dir) if self.writer.state_dir else self.stack.state_dir / "writer"

    def enricher_state_dir(self) -> Path:
        """The enricher's table store: ``enricher.state_dir``, else ``<state_dir>/enricher/<group_id>``."""
        e = self.enricher
        return Path(e.state_dir) if e.state_dir else self.stack.state_dir / "enricher" / e.group_id

    def dlq_group(self) -> str:
        """The group whose DLQ the DLQ tool works on: ``dlq.group_id``, else the writer's."""
        return self.dlq.group_id or self.writer.group_id

    def duckdb_path(self) -> Path:
        return Path(self.warehouse.duckdb_path or self.stack.state_dir / "warehouse.duckdb")

    def safe_dump(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked: the only form fit for logs."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="json"))
        return masked

    def connector_env(self) -> dict[str, str]:
        """Variables the Connect worker resolves ``${env:…}`` references in connector configs from."""
        return {
            "CDCFLOW_POSTGRES__HOST": self.postgres.host,
            "CDCFLOW_POSTGRES__PORT": str(self.postgres.port),
            "CDCFLOW_POSTGRES__USER": self.postgres.user,
            "CDCFLOW_POSTGRES__PASSWORD": self.postgres.password.get_secret_value(),
            "CDCFLOW_POSTGRES__DATABASE": self.postgres.database,
            "CDCFLOW_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "CDCFLOW_KAFKA__TOPIC_PARTITIONS": str(self.kafka.topic_partitions),
            "CDCFLOW_KAFKA__REPLICATION_FACTOR": str(self.kafka.replication_factor),
        }


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return _MASK
    if isinstance(value, str) and "://" in value and "@" in value:
        return _URL_CREDENTIALS.sub(rf"\1{_MASK}@", value)  # https://user:secret@host → https://**********@host
    return value


class _GivenEnvironment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super().__init__(), which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found = {
            name.lower(): value
            for name, value in self._environ.items()
            if name.upper().startswith(ENV_PREFIX) and name.upper() not in _NOT_SETTINGS
        }
        _refuse_conflicts(found)
        return found


class _SecretFiles(NestedSecretsSettingsSource):
    """Secrets mounted as files named like the variables, e.g. ``cdcflow_postgres__password``."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found = super()._load_env_vars()
        _refuse_conflicts(found)
        return found


def _refuse_conflicts(names: Iterable[str]) -> None:
    """``CDCFLOW_KAFKA__EXTRA`` beside ``CDCFLOW_KAFKA__EXTRA__ACKS`` gives one setting both whole and in parts;
    pydantic-settings would keep one of them silently, depending on their order."""
    given = {name.lower() for name in names}
    for name in sorted(given):
        parts = name.split("__")
        for end in range(1, len(parts)):
            whole = "__".join(parts[:end])
            if whole in given:
                raise ConfigError(f"{name.upper()} conflicts with {whole.upper()}")


def _sources(settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> tuple[PydanticBaseSettingsSource, ...]:
    """The variables of ``environ``, then the files of its secrets directory (when there is one)."""
    secrets_dir = Path(environ.get(SECRETS_DIR_ENV, str(DEFAULT_SECRETS_DIR)))
    secrets = _SecretFiles(
        SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir if secrets_dir.is_dir() else None)
    )
    return _GivenEnvironment(settings_cls, environ), secrets


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (else ``os.environ``) and the secret files; variables win over files.

    Only ``environ`` is read: ``load_settings({})`` is the defaults. Raises :class:`ConfigError` with every
    problem, each named as its variable.
    """
    sources = _sources(Settings, os.environ if environ is None else environ)
    try:
        return Settings(_build_sources=(sources, {}))
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
