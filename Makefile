# Foresight: `make run` is the main job, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FORESIGHT := $(BIN)/foresight
DATA ?= ../shared/data/yoochoose-100k
PYTEST_FLAGS ?= -q

# The other supported Pythons run the unit tests, each in its own .venv-3.X built by the same
# install rule (a sub-make with VENV and PYTHON overridden). python_for,3.X is python3.X on PATH
# if it runs, else the newest pyenv 3.X.* (pyenv's shim only answers for the versions selected
# in pyenv), else empty.
OTHER_PYTHONS := 3.12 3.13
python_for = $(shell if python$(1) -c '' 2>/dev/null; then command -v python$(1); else \
	ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$(1).*/bin/python$(1) 2>/dev/null \
	| sort -V | tail -n 1; fi)
define no_python
Python $(1) not found (no working python$(1) on PATH, no $(1) in pyenv): pyenv install $(1)
endef

.PHONY: help install services-up services-down services-status run test test-unit soak \
        services-up-replicated services-down-replicated test-replicated \
        test-integration lint typecheck bench schemas clean pythons test-unit-all \
        $(foreach v,$(OTHER_PYTHONS),test-unit-py$(subst .,,$(v)))

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | \
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

services-up-replicated: install ## Start 3 Kafka brokers and 3 Cassandra nodes on 127.0.0.2-4
	$(FORESIGHT) services up --replicated

services-down-replicated: install ## Stop the replicated set (the single set keeps running)
	$(FORESIGHT) services down --replicated

run: install ## The main job: the whole system on real local services, a replay, a report
	$(FORESIGHT) demo --data $(DATA) --out replay

test: services-up ## Install, start the services and run every test (unit and integration)
	$(BIN)/pytest -q

test-unit: install ## Run the unit tests only (no services needed)
	$(BIN)/pytest $(PYTEST_FLAGS) tests/unit

pythons: ## Say which interpreter each other supported Python is; fail if one is missing
	@$(foreach v,$(OTHER_PYTHONS),py='$(call python_for,$(v))'; \
		if [[ -z $$py ]]; then echo 'make: $(call no_python,$(v))' >&2; exit 1; fi; \
		echo "python$(v): $$py";)

# $(1): a version in OTHER_PYTHONS. No cache provider: one .pytest_cache for all the versions.
define unit_tests_on
	@py='$(call python_for,$(1))'; \
	if [[ -z $$py ]]; then echo 'make: $(call no_python,$(1))' >&2; exit 1; fi; \
	$(MAKE) --no-print-directory test-unit VENV=.venv-$(1) PYTHON="$$py" \
		PYTEST_FLAGS='-q -p no:cacheprovider'
endef

test-unit-py312: ## Unit tests on Python 3.12, in .venv-3.12
	$(call unit_tests_on,3.12)

test-unit-py313: ## Unit tests on Python 3.13, in .venv-3.13
	$(call unit_tests_on,3.13)

test-unit-all: test-unit test-unit-py312 test-unit-py313 ## Unit tests on 3.11, 3.12 and 3.13

test-integration: services-up ## Run the integration tests against the real services
	$(BIN)/pytest -q tests/integration

# Not in `make test`: six more JVMs and minutes. The set is stopped whatever the outcome.
test-replicated: install ## Kill -9 a broker, then Cassandra nodes, of the replicated set
	$(FORESIGHT) services up --replicated && \
	$(BIN)/pytest -q -s -m replicated tests/integration/test_replicated.py; \
	status=$$?; $(FORESIGHT) services down --replicated; exit $$status

lint: install ## ruff check, ruff format --check and the import contract (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

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
	rm -rf $(VENV) $(foreach v,$(OTHER_PYTHONS),.venv-$(v)) .foresight .pytest_cache .mypy_cache .ruff_cache .hypothesis
