# cdcflow — everything a fresh machine needs comes from this file, pyproject.toml, constraints.txt and
# connect/pom.xml. Targets that need the stack start it and stop what they started.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CDCFLOW := $(BIN)/cdcflow
STAMP := $(VENV)/.installed
JARS := connect/lib/.fetched
BQEMU_VENV := .cdcflow/bqemulator-venv
BQEMU_STAMP := $(BQEMU_VENV)/.installed
MONITORING_TOOLS := .cdcflow/monitoring-tools
MONITORING_STAMP := $(MONITORING_TOOLS)/.installed
DEMO_SECONDS ?= 30
DEMO_RATE ?= 200
FRESHNESS_ARGS ?=
FUZZ_SECONDS ?= 600
# The bulk JSON reader and the batch Kafka consumer are optional Rust accelerators (native/), built by cargo
# when it is on PATH at install time (rustup puts it here); without it the writer runs on confluent_kafka.
# Go (the compose checker, terraform) is where its official archive and `go install` put it.
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(HOME)/go/bin:$(PATH)

.PHONY: demo-without-cargo no-cargo-note install prereqs jars avro-converter bqemulator monitoring-tools dashboards demo test test-unit test-native test-integration lint format fuzz stack-up stack-down stack-status lock clean bench-loader bench-writer bench-peer bench-transform bench-freshness bench-enricher bench-scale bench-decode bench-files bench-buffers bench-snapshot bench-lake bench-tables

install: prereqs $(STAMP)

NATIVE := native/Cargo.toml
CRATES := native/jsonarrow native/batchconsumer
HAVE_CARGO := $(shell command -v cargo >/dev/null 2>&1 && echo yes)
$(STAMP): pyproject.toml constraints.txt native/Cargo.toml native/Cargo.lock $(foreach c,$(CRATES),$(c)/Cargo.toml $(wildcard $(c)/src/*.rs))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# PostgreSQL, Java and Maven come from Debian's packages when they are missing and we are root, and so do
# the C toolchain, OpenSSL headers and pkg-config that cargo needs to build librdkafka for the batch consumer.
# Rust's cargo is optional (Debian's is too old for the crates' dependencies: install it with rustup).
# policy-rc.d keeps the package's own cluster from starting: cdcflow runs its own under .cdcflow/.
prereqs:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	for pkg in gcc g++ make perl pkg-config libssl-dev; do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	command -v cargo >/dev/null || echo "no cargo: installing without the native accelerators (the writer runs on confluent_kafka and Arrow's JSON reader; rustup installs cargo)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing — install them (apt-get install$$missing) and re-run"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
	  trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

jars: $(JARS)

# The local BigQuery emulator for the BigQuery tests, in a virtualenv of its own (its pins clash with ours).
# DuckDB's extensions come from their packages and are installed into that virtualenv's own home: offline.
bqemulator: $(BQEMU_STAMP)

$(BQEMU_STAMP): tests/bqemulator-requirements.txt tests/fixtures/bqemulator_extensions.py
	rm -rf $(BQEMU_VENV)
	$(PYTHON) -m venv $(BQEMU_VENV)
	$(BQEMU_VENV)/bin/pip install --quiet --upgrade pip
	$(BQEMU_VENV)/bin/pip install --quiet -r tests/bqemulator-requirements.txt
	mkdir -p $(BQEMU_VENV)/home
	HOME=$(abspath $(BQEMU_VENV))/home $(BQEMU_VENV)/bin/python tests/fixtures/bqemulator_extensions.py
	touch $@

# Prometheus, promtool and Alertmanager from Debian's packages, unpacked under .cdcflow/monitoring-tools
# instead of installed: installing them would start system services, and the tests start their own servers
# on free ports. The binaries are static Go programs, so the packages' dependencies (init scripts, the
# web UI's JavaScript) are not needed. `apt-get download` works without root; the list update and the
# templates' copy need it.
monitoring-tools: $(MONITORING_STAMP)

$(MONITORING_STAMP):
	rm -rf $(MONITORING_TOOLS) && mkdir -p $(MONITORING_TOOLS)/debs
	cd $(MONITORING_TOOLS)/debs && { apt-get download -qq prometheus prometheus-alertmanager 2>/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq prometheus prometheus-alertmanager; }; }
	for deb in $(MONITORING_TOOLS)/debs/*.deb; do dpkg-deb -x $$deb $(MONITORING_TOOLS)/root; done
	rm -rf $(MONITORING_TOOLS)/debs
	$(MONITORING_TOOLS)/root/usr/bin/promtool --version >/dev/null
	@# Debian's Alertmanager reads its default notification templates from this fixed path, not its binary.
	if [ ! -e /usr/share/prometheus/alertmanager/default.tmpl ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "as root: install -D -m 644 -t /usr/share/prometheus/alertmanager $(MONITORING_TOOLS)/root/usr/share/prometheus/alertmanager/*.tmpl"; exit 1; fi; \
	  install -D -m 644 -t /usr/share/prometheus/alertmanager $(MONITORING_TOOLS)/root/usr/share/prometheus/alertmanager/*.tmpl; \
	fi
	touch $@

# Regenerate the Grafana dashboards' JSON (deploy/grafana/dashboards/) from their code in deploy/grafana/.
dashboards: install
	$(BIN)/python -m deploy.grafana

$(JARS): connect/pom.xml
	mvn -B -q -f connect/pom.xml package
	touch $@

# A real Avro converter for the tests of the avro-confluent value format, in the stack's plugin folder before
# the tests start the stack (tests/avro_converter/pom.xml says which and why).
AVRO_CONVERTER := connect/plugins/apicurio-avro-converter/.fetched
avro-converter: $(AVRO_CONVERTER)

$(AVRO_CONVERTER): tests/avro_converter/pom.xml
	mvn -B -q -f tests/avro_converter/pom.xml package
	touch $@

stack-up: install jars
	$(CDCFLOW) stack up

stack-down:
	$(CDCFLOW) stack down

stack-status:
	$(CDCFLOW) stack status

# Brings the stack up (unless it already runs); runs the workload with the writer, loader and transform live;
# drains, transforms, verifies (exit 1 on drift) and prints the gold marts; stops what it started — also on
# Ctrl-C. Unattended (CI, no terminal) it prints a status line every 10 s instead of the live table.
demo: install jars
	@started=0; \
	if ! $(CDCFLOW) stack status >/dev/null 2>&1; then started=1; fi; \
	trap 'if [ $$started = 1 ]; then $(CDCFLOW) stack down; fi' EXIT; \
	$(CDCFLOW) stack up; \
	$(CDCFLOW) demo --seconds $(DEMO_SECONDS) --rate $(DEMO_RATE)

# The demo on a machine without cargo: a fresh virtualenv gets the package (not editable, from a copy of the
# project's files, so no extension built earlier rides along) with cargo hidden from PATH, so it installs
# without the native accelerators, and `cdcflow demo` must still end with zero
# drift, on the confluent path. CI runs it after `make test`.
PURE_VENV := .cdcflow/pure-venv
demo-without-cargo: jars
	@nocargo=$$(printf '%s' "$$PATH" | tr ':' '\n' | grep -v '/\.cargo/' | paste -sd:); \
	if PATH="$$nocargo" command -v cargo >/dev/null; then echo "cargo is on PATH outside ~/.cargo: cannot hide it"; exit 1; fi; \
	rm -rf $(PURE_VENV) && $(PYTHON) -m venv $(PURE_VENV); \
	PATH="$$nocargo" $(PURE_VENV)/bin/pip install --quiet --upgrade pip; \
	src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$$src"; \
	PATH="$$nocargo" $(PURE_VENV)/bin/pip install --quiet -c constraints.txt "$$src"; \
	home=$$(pwd); cd $(PURE_VENV); \
	bin/python -c "import importlib.util as u; found = [m for m in ('services.common.kafka._kafkabatch', 'services.common.debezium._jsonarrow') if u.find_spec(m)]; assert not found, found"; \
	started=0; \
	if ! CDCFLOW_HOME="$$home" bin/cdcflow stack status >/dev/null 2>&1; then started=1; fi; \
	trap 'rm -rf "$$src"; if [ $$started = 1 ]; then CDCFLOW_HOME="$$home" bin/cdcflow stack down; fi' EXIT; \
	CDCFLOW_HOME="$$home" bin/cdcflow stack up; \
	CDCFLOW_HOME="$$home" bin/cdcflow demo --seconds $(DEMO_SECONDS) --rate $(DEMO_RATE) | tee demo.out; \
	grep -q "writer path: confluent_kafka's consumer and Arrow's JSON reader" demo.out

# Every tier. The test session starts the stack if it is not up and stops it at the end. The native crates'
# own tests need cargo: a machine without it says so and runs the rest (the extensions are not built there).
test: install jars avro-converter bqemulator monitoring-tools deploy-tools $(if $(HAVE_CARGO),test-native,no-cargo-note)
	$(BIN)/pytest tests

no-cargo-note:
	@echo "no cargo: the native accelerators are not built, so their cargo tests are not run"

# The Rust crates' own tests: fixed cases and bounded property tests (PROPTEST_CASES raises the bound).
# Without the default `extension-module` feature the test binary links libpython, so it can start an
# interpreter; PYO3_PYTHON names the interpreter to build against, as for clippy below. `--release` reuses
# what the extensions' build compiled (librdkafka's C build above all) instead of building it all again.
test-native: install
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo test --manifest-path $(NATIVE) --workspace --release --locked --no-default-features

# A longer run of the decode-path fuzzer than the bounded one in `make test`; crashers land in tests/fuzz/crashers/
# (keep them: the bounded run replays every one). FUZZ_SECONDS sets the length; the seed is in its report.
# Each JSON batch is read again by Arrow's reader alone: a record the two readers treat differently is a finding.
fuzz: install
	$(BIN)/python -m tests.fuzz --seconds $(FUZZ_SECONDS) --differential

test-unit: install monitoring-tools deploy-tools
	$(BIN)/pytest tests/unit

test-integration: install jars avro-converter bqemulator monitoring-tools
	$(BIN)/pytest tests/integration tests/e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cargo fmt --manifest-path $(NATIVE) --all --check
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy --manifest-path $(NATIVE) --workspace --release --locked --all-targets -- -D warnings

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cargo fmt --manifest-path $(NATIVE) --all

# Refresh constraints.txt from a clean resolve of pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet -e '.[dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^cdcflow' > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(BQEMU_VENV) connect/lib connect/plugins connect/agents .mypy_cache .ruff_cache .pytest_cache

# A benchmark's command with the local stack up: started here if it was not up, and stopped again after.
define with_stack
	@started=0; \
	if ! $(CDCFLOW) stack status >/dev/null 2>&1; then started=1; $(CDCFLOW) stack up; fi; \
	trap 'if [ $$started = 1 ]; then $(CDCFLOW) stack down; fi' EXIT; \
	$(1)
endef

# Loader throughput into DuckDB bronze with bronze at 1x and 10x a base size (BENCHMARKS.md).
bench-loader: install
	$(BIN)/python -m bench.loader_bench

# The loader's cycle with 10,000 and 100,000 files already loaded, archiving on and off, beside a small
# lake (BENCHMARKS.md). LAKE_BENCH_ARGS="--files 10000 --state-dir /var/tmp/lake-bench" for a shorter run.
bench-lake: install
	$(BIN)/python -m bench.lake_scale_bench $(LAKE_BENCH_ARGS)

# 50 captured tables with a trickle of changes beside 5: the loader's cycle with nothing new and with 1, 5 and 50
# tables changed, a full dbt build beside silver steps of the changed tables, lake files per table-hour
# (BENCHMARKS.md). No servers: a local lake and a DuckDB file in a temporary folder.
bench-tables: install
	$(BIN)/python -m bench.many_tables_bench $(TABLES_BENCH_ARGS)

# An incremental silver run after a 1% change beside a full refresh of the same data (BENCHMARKS.md);
# TRANSFORM_BENCH_ARGS="--backfilled" with a backfill's read of every key in bronze.
bench-transform: install
	$(BIN)/python -m bench.transform_bench $(TRANSFORM_BENCH_ARGS)

# PostgreSQL commit → bronze and → silver at a steady source rate, p50/p95/p99 (BENCHMARKS.md).
# Needs the local stack (started here if it is not up, and stopped again).
bench-freshness: install jars
	$(call with_stack,$(BIN)/python -m bench.freshness_bench $(FRESHNESS_ARGS))

# Writer throughput in events per CPU-second beside the naive and ceiling baselines (BENCHMARKS.md).
# Needs the local stack (started here if it is not up, and stopped again).
bench-writer: install jars
	$(call with_stack,$(BIN)/python -m bench.writer_bench)

# The writer beside a peer, Apache Iceberg's Kafka Connect sink (Parquet, Hadoop catalog on local disk), in
# events per CPU-second over the same events (BENCHMARKS.md). The peer's jars come from bench/peer/pom.xml,
# fetched here only; it runs in a Connect worker of its own, stopped at the end. Needs the local stack
# (started here if it is not up, and stopped again).
PEER_JARS := bench/peer/plugins/.fetched
$(PEER_JARS): bench/peer/pom.xml
	mvn -B -q -f bench/peer/pom.xml package
	touch $@

bench-peer: install jars $(PEER_JARS)
	$(call with_stack,$(BIN)/python -m bench.peer_bench $(PEER_BENCH_ARGS))

# Enricher throughput in enriched events per CPU-second beside a per-event PostgreSQL lookup, and the table
# store's rebuild from its topics (BENCHMARKS.md). Needs the local stack (started here if it is not up, and
# stopped again).
bench-enricher: install jars
	$(call with_stack,$(BIN)/python -m bench.enricher_bench $(ENRICHER_BENCH_ARGS))

# The writer over 1, 20 and 200 captured tables (6 partitions each) and one table of 64 partitions: events per
# CPU-second and peak RSS of each (BENCHMARKS.md). Its tables and connector are its own, removed at the end.
# Needs the local stack (started here if it is not up, and stopped again).
bench-scale: install jars
	$(call with_stack,$(BIN)/python -m bench.scale_bench $(SCALE_BENCH_ARGS))

# The decoder's CPU per event and per call as a topic's batch shrinks, in process, on real change events
# (BENCHMARKS.md); DECODE_BENCH_ARGS="--sizes 5000,100". Needs the local stack (started here if it is not up).
bench-decode: install
	$(call with_stack,$(BIN)/python -m bench.decode_bench $(DECODE_BENCH_ARGS))

# The write step's CPU per event as a lake file's rows shrink, in process, on real change events
# (BENCHMARKS.md); FILE_SIZE_BENCH_ARGS="--sizes 35000,175". Needs the local stack (started here if it is not up).
bench-files: install
	$(call with_stack,$(BIN)/python -m bench.file_size_bench $(FILE_SIZE_BENCH_ARGS))

# What a buffered table holds in memory beyond its values, beside the writer's budget estimate, in process, on
# real change events (BENCHMARKS.md); BUFFER_BENCH_ARGS="--tables 2000 --rows 50". Needs the local stack
# (started here if it is not up).
bench-buffers: install
	$(call with_stack,$(BIN)/python -m bench.buffer_bench $(BUFFER_BENCH_ARGS))

# An initial snapshot of a 5,000,000-row table from connector start to silver with zero drift, the share of
# each stage (BENCHMARKS.md); SNAPSHOT_BENCH_ARGS="--rows N" for a smaller one. Needs the local stack
# (started here if it is not up, and stopped again).
bench-snapshot: install jars
	$(call with_stack,$(BIN)/python -m bench.snapshot_bench $(SNAPSHOT_BENCH_ARGS))

# --- silver, gold and verify (dbt/; services/transform) ---------------------------------------------------
.PHONY: transform verify silver-models silver-check

transform: install
	$(CDCFLOW) transform --once

verify: install
	$(CDCFLOW) verify

silver-models: install
	$(CDCFLOW) schemas silver

silver-check: install
	$(CDCFLOW) schemas silver --check

# --- deploy/ (the image, docker-compose.yml, Kubernetes) -----------------------------------------------------
# The offline checks of tests/unit/test_deploy_*.py need the Compose project loader (compose-go, a small Go
# program), kustomize (kubectl's own when kubectl is installed, else kustomize's Go module) and terraform.
.PHONY: deploy-tools deploy-generate
DEPLOY_TOOLS := deploy/tools/bin
KUSTOMIZE_VERSION := v5.7.1
TERRAFORM_VERSION := v1.5.7
deploy-tools: $(DEPLOY_TOOLS)/composecheck $(if $(shell command -v kubectl),,$(DEPLOY_TOOLS)/kustomize) \
  $(if $(shell command -v terraform),,$(DEPLOY_TOOLS)/terraform)

$(DEPLOY_TOOLS)/composecheck: $(wildcard deploy/tools/composecheck/*.go) deploy/tools/composecheck/go.mod deploy/tools/composecheck/go.sum
	cd deploy/tools/composecheck && go build -o ../bin/composecheck .

$(DEPLOY_TOOLS)/kustomize:
	GOBIN=$(abspath $(DEPLOY_TOOLS)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# `terraform fmt` checks deploy/access/terraform; 1.5.7 is the last release under the MPL (a few minutes to build).
$(DEPLOY_TOOLS)/terraform:
	GOBIN=$(abspath $(DEPLOY_TOOLS)) go install github.com/hashicorp/terraform@$(TERRAFORM_VERSION)

# Strimzi KafkaConnectors from connect/connectors/*.json, the PrometheusRule, the local overlay's demo schema.
deploy-generate: install
	$(CDCFLOW) deploy generate
