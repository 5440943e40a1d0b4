# Entry points; scripts do the work. `make test TIER=unit|bpf|cluster|e2e|node` runs one tier.
VENV ?= .venv
TIER ?=
PYTEST_ARGS ?=

.PHONY: setup test lint demo

# The whole product on this machine until Ctrl-C (root): prints the map view's URL.
DEMO_ARGS ?=
# The simulated shop needs no real node: its tools and images are built only for
# DEMO_ARGS=--real-node (`make test` builds everything).
demo:
	TRACEPROBE_SKIP_NODE=$(if $(findstring --real-node,$(DEMO_ARGS)),,1) ./scripts/setup.sh
	$(VENV)/bin/python scripts/demo.py $(DEMO_ARGS)

setup:
	./scripts/setup.sh

test: setup
	./scripts/test.sh $(TIER) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/pytest tests/unit/test_quality_gates.py

# Every benchmark, as root: tables with their baselines, about 20 minutes.
# Shorter: make bench BENCH_ARGS=--quick; record: BENCH_ARGS=--write-docs (docs/benchmarks.md).
# One alone: make bench BENCH_ARGS="--only apply_to_ready". See benchmarks/README.md.
BENCH_ARGS ?=
.PHONY: bench
bench:
	@test -x $(VENV)/bin/python || { echo "no $(VENV): run 'make setup' first"; exit 1; }
	$(VENV)/bin/python -m benchmarks.all $(BENCH_ARGS)
