# datapolis — the local platform and its checks.
#
#   make up      Kafka, PostgreSQL, migrations and the four services
#   make demo    a living demo metropolis on top of make up (DEMO_ARGS=--once: tell the story once)
#   make test    the test suite against the real Kafka and PostgreSQL
#
# Ports are overridable: make up KAFKA_PORT=19092 CATALOG_PORT=9001 ...

SHELL := /bin/bash
.DEFAULT_GOAL := help

export KAFKA_PORT ?= 9092
export PG_PORT ?= 55432
export CATALOG_PORT ?= 8001
export INGEST_PORT ?= 8002
export CONSENT_PORT ?= 8003
export NOTIFY_PORT ?= 8004
# The stream workers' /healthz, /readyz and /metrics.
export CATALOG_WORKER_PORT ?= 8101
export INGEST_WORKER_PORT ?= 8102
export CONSENT_WORKER_PORT ?= 8103
export NOTIFY_WORKER_PORT ?= 8104
# The demo's webhook receiver and residents' token issuer.
export DEMO_PORT ?= 8090

LOCAL := deploy/local
VENV := .venv/bin
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: help install infra up down status migrate demo test test-unit lint bench k8s-validate images logs clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## Python dependencies (uv, locked) and the Kafka jars
	@$(LOCAL)/bootstrap.sh
	@$(LOCAL)/kafka.sh fetch

infra: install ## start Kafka and PostgreSQL only
	@$(LOCAL)/postgres.sh start
	@$(LOCAL)/kafka.sh start

migrate: infra ## apply every service's migrations
	@$(LOCAL)/services.sh migrate

up: migrate ## run the platform: Kafka, PostgreSQL, migrations, the four services
	@$(LOCAL)/services.sh start
	@echo
	@echo "datapolis is up:"
	@echo "  Kafka        127.0.0.1:$(KAFKA_PORT)"
	@echo "  PostgreSQL   postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis"
	@echo "  catalog      http://127.0.0.1:$(CATALOG_PORT)/docs"
	@echo "  ingest       http://127.0.0.1:$(INGEST_PORT)/docs"
	@echo "  consent      http://127.0.0.1:$(CONSENT_PORT)/docs"
	@echo "  notify       http://127.0.0.1:$(NOTIFY_PORT)/docs"
	@echo "  workers      catalog http://127.0.0.1:$(CATALOG_WORKER_PORT)/readyz," \
	      "ingest http://127.0.0.1:$(INGEST_WORKER_PORT)/readyz," \
	      "consent http://127.0.0.1:$(CONSENT_WORKER_PORT)/readyz," \
	      "notify http://127.0.0.1:$(NOTIFY_WORKER_PORT)/readyz (and /metrics)"
	@echo "  operator key dpk_operator_dev-only-operator-key-change-me (development only)"
	@echo "  logs         .local/logs/   stop with: make down"

demo: up ## the demo metropolis: seeds it, streams records, tells the story (DEMO_ARGS=--once to run it once)
	@$(VENV)/python -m datapolis_demo $(DEMO_ARGS)

down: ## stop everything make up started
	@$(LOCAL)/services.sh stop
	@$(LOCAL)/kafka.sh stop
	@$(LOCAL)/postgres.sh stop

status: ## what runs, where, and whether it is ready
	@$(LOCAL)/kafka.sh status || true
	@$(LOCAL)/postgres.sh status || true
	@$(LOCAL)/services.sh status || true

test: infra ## all tests (unit, integration, end-to-end) on the real Kafka and PostgreSQL
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/pytest $(PYTEST_ARGS)

test-unit: ## unit tests only (nothing running needed)
	@$(VENV)/pytest tests/unit $(PYTEST_ARGS)

lint: ## ruff, mypy strict, the import contract, shellcheck
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy shared/src services/catalog/src services/ingest/src services/consent/src services/notify/src cli/src demo/src
	$(VENV)/lint-imports
	@if command -v shellcheck >/dev/null; then shellcheck deploy/local/*.sh deploy/images/*.sh .ci/run; \
	 else echo "shellcheck not installed; skipped (apt-get install shellcheck)"; fi

bench: infra ## benchmarks: ingest against the real broker, the record-id window, catalog-to-ingest propagation, consent ledger verification, consent grants and revocations, signed webhook deliveries/s, notify's entitlement decisions, server-sent event latency, end to end: ingest to webhook and SSE, fan-out, withdrawals under load (prints figures)
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/ingest.py
	@$(VENV)/python bench/dedup.py
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/propagation.py
	@DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/ledger.py
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/consent.py
	@$(VENV)/python bench/webhook_sender.py
	@$(VENV)/python bench/entitlements.py
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/notify_fanout.py
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/sse.py
	@KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	 DATABASE_URL=postgresql://datapolis:datapolis@127.0.0.1:$(PG_PORT)/datapolis \
	 $(VENV)/python bench/e2e.py

images: install ## container images of every service and the demo, built here with buildah from a Debian base (deploy/images/)
	@deploy/images/build.sh

k8s-validate: ## render deploy/k8s overlays and validate them offline (core schemas and CRDs)
	@deploy/k8s/validate.sh

.PHONY: dashboard-check
dashboard-check: ## every query of the Grafana dashboard reads a metric the running services export (after make up)
	@$(VENV)/python deploy/k8s/check_dashboard.py

logs: ## follow the services' logs
	@tail -n 20 -F .local/logs/*.log

clean: down ## stop everything and delete local state (Kafka data, PostgreSQL data, logs)
	rm -rf .local
