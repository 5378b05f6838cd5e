# The only task runner. `make help` lists the targets; README.md explains them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
PYTEST := $(BIN)/pytest $(PYTEST_ARGS)
MANAGEMENT_URL := http://127.0.0.1:15672
# up (Podman's Docker API + the Codex test image), CMD with var/podman/env.sh's variables, then
# down -- unless `make podman` had left the service running, which it then reuses and keeps
PODMAN_RUN := bash .ci/podman-env.sh run
BENCH_N ?= 10
BENCH_LOG_RECORDS ?= 200000
BENCH_LOG_ROWS ?= 1000000
BENCH_LOG_RUNS ?= 2000
BENCH_LOG_QUERIES ?= 500
CHAOS_ARGS ?=

.PHONY: help venv services up down status demo demo-down docs fmt lint test test-unit test-integration test-e2e check \
	podman podman-down compose-up compose-down bench-codex bench-logs bench-memory bench chaos

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv and install the project into it (again whenever pyproject.toml changes)

.env: | .env.example
	cp .env.example .env
	@echo "created .env from .env.example: local PostgreSQL and RabbitMQ"

services: ## make sure local PostgreSQL and RabbitMQ (with its management API) are up
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect \
		"$$(ls /etc/postgresql | sort -V | tail -n 1)" main start
	@for _ in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@pg_isready -h 127.0.0.1 -p 5432
	@rabbitmq-diagnostics -q ping >/dev/null 2>&1 || rabbitmq-server -detached
	@# await_startup fails at once while the Erlang node is not up yet, so retry it
	@for _ in $$(seq 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
	@rabbitmqctl -q await_startup
	@curl -sf -o /dev/null -u guest:guest $(MANAGEMENT_URL)/api/overview \
		|| rabbitmq-plugins -q enable rabbitmq_management
	@for _ in $$(seq 60); do curl -sf -o /dev/null -u guest:guest $(MANAGEMENT_URL)/api/overview && break; \
		sleep 1; done
	@curl -sf -o /dev/null -u guest:guest $(MANAGEMENT_URL)/api/overview \
		&& echo "PostgreSQL and RabbitMQ are up; management API at $(MANAGEMENT_URL)"

podman: ## Podman's Docker API (var/podman) + the Codex test image; left up for quick loops
	bash .ci/podman-env.sh up

podman-down: ## stop the Podman API service that `make podman` started
	bash .ci/podman-env.sh down

up: $(STAMP) .env services ## start the API, relay and workers in the background (pids and logs under var/)
	$(BIN)/spec-workflow up

down: $(STAMP) ## stop exactly the processes `make up` started
	$(BIN)/spec-workflow down

status: $(STAMP) ## list the processes `make up` started and the API's readiness
	$(BIN)/spec-workflow status

demo: $(STAMP) .env services ## the whole product locally: sample repo, Codex in a container, one run to a pushed branch
	bash scripts/demo.sh up

demo-down: $(STAMP) ## stop what `make demo` started and delete its auth volumes
	bash scripts/demo.sh down

docs: $(STAMP) ## regenerate docs/asyncapi/<service>.json (the AMQP contracts, from FastStream)
	bash scripts/asyncapi.sh

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint: $(STAMP) ## ruff format --check, ruff check, mypy, import-linter
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tests
	$(BIN)/lint-imports

test-unit: $(STAMP) ## unit tests only (no network)
	$(PYTEST) tests/unit

test-integration: $(STAMP) services ## integration tests (real PostgreSQL, RabbitMQ, Podman)
	$(PODMAN_RUN) $(PYTEST) tests/integration

test-e2e: $(STAMP) services ## end-to-end tests (the services as real processes)
	$(PODMAN_RUN) $(PYTEST) tests/e2e

test: $(STAMP) services ## the whole suite: unit, integration, e2e
	$(PODMAN_RUN) $(PYTEST) tests

check: lint test ## lint, then the whole suite

bench-codex: $(STAMP) services ## submit_codex_job pipeline vs `codex exec` alone, BENCH_N each (default 10) -> docs/benchmarks.md
	BENCH_N=$(BENCH_N) $(PODMAN_RUN) $(BIN)/python -m tests.bench.bench_codex

bench-logs: $(STAMP) services ## log sink ingest records/s and GET /api/logs?runId= latency over BENCH_LOG_ROWS rows -> docs/benchmarks.md
	BENCH_LOG_RECORDS=$(BENCH_LOG_RECORDS) BENCH_LOG_ROWS=$(BENCH_LOG_ROWS) BENCH_LOG_RUNS=$(BENCH_LOG_RUNS) BENCH_LOG_QUERIES=$(BENCH_LOG_QUERIES) $(BIN)/python -m tests.bench.bench_logs

bench-memory: $(STAMP) services ## VmRSS of every real service (spec-workflow up, real containers) at idle and through bursts of BENCH_MEMORY_RUNS runs -> docs/benchmarks.md
	$(PODMAN_RUN) $(BIN)/python -m tests.bench.bench_memory

bench: $(STAMP) services ## orchestration vs a Celery chain, API reads over 100,000 runs, RSS (BENCH_RUNS, BENCH_SEQUENTIAL, ...) -> docs/benchmarks.md
	$(BIN)/python -c 'import celery, psycopg2' 2>/dev/null || $(BIN)/pip install --disable-pip-version-check -q -e '.[dev,bench]'
	$(BIN)/python -m tests.bench.bench_orchestration

chaos: $(STAMP) services ## fault scenarios a-f, runs accounted Jepsen-style (not in `make test`; ~15 min) -> docs/chaos.md
	$(PODMAN_RUN) $(BIN)/python -m tests.chaos $(CHAOS_ARGS)

# `up --wait` fails when a one-shot container exits, even with 0 (docker/compose#10596):
# bring up the servers, run the one-shot steps to completion, then the long-running rest.
# DOCKER_GID: the Docker socket's group (preflight and the Codex runner join it), unless set.
compose-up compose-down: export DOCKER_GID ?= $(shell stat -c %g "$${DOCKER_SOCKET:-/var/run/docker.sock}" 2>/dev/null)
compose-up: .env ## the system through docker compose (needs a Docker engine; see docker-compose.yml)
	docker compose --profile codex-image build
	docker compose up --detach --wait rabbitmq postgres
	docker compose run --rm --no-deps storage-init
	docker compose run --rm --no-deps migrate
	docker compose up --detach --wait --no-deps $$(docker compose config --services | grep -vxE 'rabbitmq|postgres|storage-init|migrate')

compose-down: ## stop the compose stack; volumes (Codex logins, database) and the data dir stay
	docker compose down
