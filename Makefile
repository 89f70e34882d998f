# Ketanmu: `make run` brings the system up, `make test` runs every test from nothing.
SHELL := /bin/bash
PY := .venv/bin/python
# The interpreter .venv is built on: the distribution's python3.11 when it can make a venv (Debian
# builds it with PGO and LTO, as the python:3.11-slim image production runs is built), else
# python3. A source build without those (pyenv's default) costs the services ~10% more CPU: see
# bench/README.md, seventh round. Override with `make PYTHON=... install` after `make clean`.
PYTHON ?= $(or $(shell for p in /usr/bin/python3.11 python3; do $$p -c 'import ensurepip, venv' >/dev/null 2>&1 && { command -v $$p; break; }; done),python3)
INFRA := deploy/local/infra.sh

.PHONY: help install run demo stop down infra-up infra-down infra-status test test-unit \
        test-infra-up test-infra-down test-faults test-faults-infra-down \
        test-integration test-e2e schemas lint clean bench

help:
	@echo "make run        start Kafka, PostgreSQL, the four services and the partner sandbox"
	@echo "make demo       push a batch of requests through to delivered (after make run)"
	@echo "make stop       stop the services and the sandbox; make down also stops Kafka and PostgreSQL"
	@echo "make test       unit, integration and end-to-end tests (installs what is missing)"
	@echo "make schemas    regenerate the committed JSON Schemas and AsyncAPI document"
	@echo "make bench      benchmark the pipeline"

# Python packages, pinned by constraints.txt; re-run when either file changes.
.venv/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || { echo "creating .venv on $(PYTHON)"; $(PYTHON) -m venv .venv; }
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@
install: .venv/.installed

infra-up: install
	@bash $(INFRA) up
infra-down:
	@bash $(INFRA) down
infra-status:
	@bash $(INFRA) status

run: infra-up
	@$(PY) -m deploy.local.system up
	@echo "Try it: make demo   (stop with: make stop, or make down to stop Kafka and PostgreSQL too)"

demo: install
	@$(PY) -m deploy.local.demo

stop:
	@$(PY) -m deploy.local.system down
down: stop infra-down test-infra-down test-faults-infra-down

# The tests run on their own Kafka broker (its own ports and data), so that a running `make run`
# and the tests never consume each other's events; PostgreSQL is shared (a database per run).
TEST_KAFKA := KAFKA_HOME=.local/kafka-test KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093
TEST_ENV := KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092

test-infra-up: install
	@$(TEST_KAFKA) bash $(INFRA) up
test-infra-down:
	@$(TEST_KAFKA) bash $(INFRA) down

test: test-infra-up
	@$(TEST_ENV) $(PY) -m pytest tests/unit tests/integration tests/e2e

test-unit: install
	@$(PY) -m pytest tests/unit
test-integration: test-infra-up
	@$(TEST_ENV) $(PY) -m pytest tests/integration
test-e2e: test-infra-up
	@$(TEST_ENV) $(PY) -m pytest tests/e2e

# Fault tests break things on purpose (SIGKILL, broker and database restarts): see tests/faults.
# They restart their Kafka and PostgreSQL, so they get their own (other ports and data, the same
# defaults as tests/faults/infra.py), stopped afterwards: no one else's tests are disturbed.
FAULT_INFRA := KAFKA_HOME=.local/kafka-faults KAFKA_PORT=29092 KAFKA_CONTROLLER_PORT=29093 \
               PG_HOME=.local/pg-faults PGPORT=25432
test-faults: install
	@$(FAULT_INFRA) bash $(INFRA) up
	@$(PY) -m pytest tests/faults; status=$$?; $(FAULT_INFRA) bash $(INFRA) down >/dev/null; \
	  exit $$status
test-faults-infra-down:
	@$(FAULT_INFRA) bash $(INFRA) down >/dev/null

# The benchmark prints figures; it never fails on speed. Results go to bench-results/.
bench: infra-up
	@$(PY) -m bench

schemas: install
	@$(PY) -m shared.contracts.generate

lint: install
	@$(PY) -m ruff check shared services sandbox deploy bench tests

clean:
	rm -rf .venv .pytest_cache
