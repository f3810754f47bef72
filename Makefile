# Quick start: `make demo` then `make test`. Both bootstrap everything they need (scripts/bootstrap.sh).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
STAMP := .venv/.installed

.PHONY: setup test test-fast demo bench clean

setup:
	@bash scripts/bootstrap.sh

# Everything, slow end-to-end tests (real agents, training, dashboard) included. CI runs this.
test: setup
	$(PYTEST) -m "slow or not slow" -p no:cacheprovider

# The fast default selection (what a bare `pytest` runs).
test-fast: setup
	$(PYTEST) -p no:cacheprovider

demo: setup
	.venv/bin/intercept-rl train --preset cpu-demo

BENCHMARKS := gate_overhead concurrency tokenize_scaling cpu_train_step learning

# Each benchmark prints its numbers next to its targets (docs/benchmarks.md); --quick keeps each under ~3 minutes.
bench: setup
	for b in $(BENCHMARKS); do $(PY) bench/$$b.py --quick || exit 1; done

clean:
	rm -rf .venv .venv-agents .agents .cache
