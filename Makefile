# Two commands matter: `make run` and `make test`. Everything else is what they are built from.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run worker test test-fast bench lint typecheck check schemas broker-start broker-stop clean kustomize

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the live demo on the embedded default: a local Kafka, a worker and a simulated fleet
run: $(STAMP)
	$(BIN)/python -m streams demo

## worker: one worker on the embedded default (a local single-node Kafka, started for you)
worker: $(STAMP)
	@if [ -z "$$TRUST_KAFKA_BOOTSTRAP_SERVERS" ]; then \
		export TRUST_KAFKA_BOOTSTRAP_SERVERS=$$(deploy/local/kafka start | tail -n 1); \
	fi; \
	exec $(BIN)/python -m streams worker

## test: the whole suite, against a real broker (the local one unless one is configured)
test: $(STAMP)
	$(BIN)/python -m pytest

## test-fast: only the tests that need no broker
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

## bench: every benchmark scenario, then docs/benchmarks.md from their results (needs Kafka)
bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

lint: $(STAMP)
	$(BIN)/ruff check streams tests deploy
	$(BIN)/ruff format --check streams tests deploy

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## kustomize: the pinned kustomize in .local/bin, built with Go (the manifests' test renders with it)
kustomize:
	deploy/k8s/install-kustomize

schemas: $(STAMP)
	$(BIN)/python -m streams schemas --out schemas

broker-start:
	deploy/local/kafka start

broker-stop:
	deploy/local/kafka stop

clean:
	deploy/local/kafka stop || true
	rm -rf $(VENV) .local/state .pytest_cache .mypy_cache .ruff_cache
