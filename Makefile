# Quick start: `make demo` then `make test`. Both bootstrap everything they need (scripts/bootstrap.sh).
PY := .venv/bin/python
PYTEST := $(PY) -m pytest
STAMP := .venv/.installed

.PHONY: setup test test-long test-fast test-reliability demo bench clean lock lock-upgrade doctor synth-tasks synth-images

setup:
	@bash scripts/bootstrap.sh

# Re-resolve the locks (locks/) after an input changed (pyproject.toml, locks/agents.in, locks/npm/*/package.json);
# existing pins are kept. Commit the lock diff with the change that needed it.
lock:
	bash scripts/lock.sh

# A deliberate upgrade: the newest versions the inputs allow, reinstalled from the new locks, then the whole suite.
# Commit the lock diff only with this green run behind it (README: "Upgrading dependencies").
lock-upgrade:
	bash scripts/lock.sh --upgrade
	$(MAKE) test

# Everything the system relies on, one line each with its remedy (exit 1 if something required is missing).
doctor: setup
	.venv/bin/intercept-rl doctor

# Everything, slow end-to-end tests (real agents, training, dashboard) included, but not the benchmark smoke runs
# marked `bench` (`make test-bench`; benchmarks stay outside CI). CI runs this.
# Docker comes up first (scripts/docker_up.sh; the Docker tests skip with the reason where it cannot) and the daemon
# it started, if any, is stopped afterwards.
test: setup
	bash scripts/docker_up.sh
	$(PYTEST) -m "not bench and not long" -p no:cacheprovider; rc=$$?; bash scripts/docker_down.sh; exit $$rc

# The benchmark scripts' smoke runs that take a minute or more each (tests/test_bench.py, marked `bench`).
test-bench: setup
	$(PYTEST) tests/test_bench.py -m bench -p no:cacheprovider

# The end-to-end runs on built artifacts (marked `long`: the warm-started policy's teacher rollouts and exactness,
# issue #26), outside CI: the first builds the warm model (`intercept-rl warm-start`, ~30 min on 2 cores).
test-long: setup
	$(PYTEST) -m long -p no:cacheprovider

# The full reliability suite (>= 10,000 hostile requests, 500-rollout fault runs, the reward-hacking battery, 32
# containers at once, the Docker leak run): every full-scale piece in one invocation, ending with one summary table.
# `make test` runs its quick slice.
test-reliability: setup
	bash scripts/docker_up.sh
	RELIABILITY_FULL=1 $(PYTEST) tests/reliability tests/rollout_worker/environment/test_docker_leaks.py -m "slow or not slow" \
	  -p no:cacheprovider; rc=$$?; bash scripts/docker_down.sh; exit $$rc

# The fast default selection (what a bare `pytest` runs).
test-fast: setup
	$(PYTEST) -p no:cacheprovider

# The shipped synthesized task set (issue #24, docs/synth_tasks.md): every package of the committed manifest from its
# sdist, its task images built locally and cached, every task validated (gold 1.0, no change 0.0); rewrites the rows
# (tasks.jsonl) and report.json next to the manifest. Packages already in tasks.jsonl are rebuilt too (same seed, same rows).
SYNTH_DIR := rollout_worker/environment/tasks/synth/shipped
synth-tasks: setup
	bash scripts/docker_up.sh
	.venv/bin/intercept-rl tasks synth --manifest $(SYNTH_DIR)/manifest.toml --out $(SYNTH_DIR) $(SYNTH_ARGS)

# Only the task images the committed rows name (no screening, no validation): what `--tasks synth --sandbox docker`
# needs on a fresh machine.
synth-images: setup
	bash scripts/docker_up.sh
	.venv/bin/intercept-rl tasks synth --images-only --manifest $(SYNTH_DIR)/manifest.toml --out $(SYNTH_DIR)

# The demo needs none of the big agent CLIs (make setup installs them): a fresh machine starts it sooner.
demo:
	@INTERCEPT_RL_BIG_AGENTS=0 bash scripts/bootstrap.sh
	.venv/bin/intercept-rl train --preset $(or $(PRESET),learning-demo)

BENCHMARKS := gate_overhead concurrency tokenize_scaling cpu_train_step learning gate_shards ray_overhead

# Each benchmark prints its numbers next to its targets (docs/benchmarks.md); --quick keeps each under ~3 minutes.
bench: setup
	for b in $(BENCHMARKS); do $(PY) bench/$$b.py --quick || exit 1; done

clean:
	rm -rf .venv .venv-agents .agents .cache
