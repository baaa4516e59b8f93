# The two commands: `make run` (the all-in-one) and `make test` (everything).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UNIT_WORKERS ?= $(shell echo $$(( 2 * $$(nproc) )))

.PHONY: run test unit functional bench bench-scaling lint typecheck genconfig check-config system-deps clean

run: $(STAMP)
	$(BIN)/tether-allinone --config-file etc/tether/allinone.ini

# The unit tests in two workers per core (they wait on fsyncs, threads and
# sockets as much as they compute: 163 s against 201 s with one per core on
# two cores); the functional suite on SQLite, then again
# on a private PostgreSQL cluster (tests/functional/postgresql.py), but for
# the tests that start no plugin. The functional passes one after the other:
# side by side on two cores each took 1.5 times as long and the chaos suite
# ran out of time.
test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m pytest -p no:cacheprovider -n $(UNIT_WORKERS) --durations=5 tests/unit examples/acme-driver/tests
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 tests/functional
	$(BIN)/python -m pytest -p no:cacheprovider --durations=15 --database postgresql tests/functional

unit: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -n $(UNIT_WORKERS) tests/unit

functional: $(STAMP) system-deps
	$(BIN)/python -m pytest -p no:cacheprovider tests/functional
	$(BIN)/python -m pytest -p no:cacheprovider --database postgresql tests/functional

# Throughput, latency and memory against the baselines, in one run (bench/).
bench: $(STAMP) system-deps
	tools/install-system-deps.sh bench
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# SQLite against PostgreSQL with one and two plugin replicas (docs/scaling.md).
bench-scaling: $(STAMP) system-deps
	tools/install-system-deps.sh bench
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.replicas $(BENCH_ARGS)

$(STAMP): setup.cfg setup.py examples/acme-driver/setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The example vendor driver, installed as any vendor's package would be.
	$(BIN)/python -m pip install --quiet -e examples/acme-driver
	touch $(STAMP)

system-deps:
	tools/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check tether tests examples bench
	$(BIN)/ruff format --check tether tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy tether

# Sample ini files are generated from the option definitions, never edited.
genconfig: $(STAMP)
	for role in plugin agent allinone; do \
	  $(BIN)/oslo-config-generator --config-file etc/oslo-config-generator/$$role.conf; done
	$(BIN)/oslopolicy-sample-generator --namespace tether --output-file etc/tether/policy.yaml.sample

check-config: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -q tests/unit/test_sample_config.py

clean:
	rm -rf $(VENV) build *.egg-info
