# Entry points; scripts do the work. `make test TIER=unit|bpf|cluster|e2e` runs one tier.
VENV ?= .venv
TIER ?=
PYTEST_ARGS ?=

.PHONY: setup test lint

setup:
	./scripts/setup.sh

test: setup
	./scripts/test.sh $(TIER) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/pytest tests/unit/test_quality_gates.py
