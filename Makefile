# Foresight: `make run` is the main job, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FORESIGHT := $(BIN)/foresight
DATA ?= ../shared/data/yoochoose-100k

.PHONY: help install services-up services-down services-status run test test-unit soak \
        test-integration lint typecheck bench schemas clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install Foresight with its test and bench extras

services-up: install ## Start local Kafka and Cassandra (downloads the jars the first time)
	$(FORESIGHT) services up

services-down: install ## Stop the local Kafka and Cassandra that services-up started
	$(FORESIGHT) services down

services-status: install ## Show the local services' ports, pids and health
	$(FORESIGHT) services status

run: install ## The main job: the whole system on real local services, a replay, a report
	$(FORESIGHT) demo --data $(DATA) --out replay

test: services-up ## Install, start the services and run every test (unit and integration)
	$(BIN)/pytest -q

test-unit: install ## Run the unit tests only (no services needed)
	$(BIN)/pytest -q tests/unit

test-integration: services-up ## Run the integration tests against the real services
	$(BIN)/pytest -q tests/integration

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict over the project
	$(BIN)/mypy foresight schemas producers streams consumers agents origin tests bench

bench: services-up ## Benchmarks: each prints one JSON object
	$(FORESIGHT) topics create
	$(FORESIGHT) db migrate
	$(BIN)/python bench/produce.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/guard_fpr.py
	$(BIN)/python bench/eval_yoochoose.py
	$(BIN)/python bench/ring.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/sweep.py

soak: services-up ## About five minutes of steady replay: RSS per process and queues (JSON)
	$(BIN)/python bench/soak.py --seconds 300 --clients 100

schemas: install ## Re-export the JSON Schemas from the records
	$(FORESIGHT) schemas export

clean: ## Remove the venv and the local services' state (stop them first)
	-$(FORESIGHT) services down
	rm -rf $(VENV) .foresight .pytest_cache .mypy_cache .ruff_cache .hypothesis
