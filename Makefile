# The documented way to do things. Every target creates .venv and installs what is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run sim test drills reliability lint typecheck check bench profile clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the main job: `svc run` against the embedded simulator for 60 s (Ctrl-C stops it earlier)
run: $(STAMP)
	$(BIN)/svc run --duration 60 --summary-json run-summary.json

## sim: the simulated Binance exchange on 127.0.0.1:8765 until Ctrl-C
sim: $(STAMP)
	$(BIN)/svc sim

## test: the whole test suite; "no tests collected" (pytest exit 5) is a failure
test: $(STAMP)
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

## drills: incident drills, svc run with one fault each against a real Prometheus (docs/drills.md)
drills: $(STAMP)
	$(BIN)/pytest -m drills

## reliability: the fault-injection suite, then docs/reliability.md from its outcomes
reliability: $(STAMP)
	mkdir -p build
	SVC_RELIABILITY_REPORT=build/reliability.json $(BIN)/pytest -m faults; \
	rc=$$?; $(BIN)/python tools/reliability_report.py build/reliability.json -o docs/reliability.md; \
	exit $$rc

## profile: svc run on the simulator under load, recorded by py-spy for 20 s (flamegraph in profiles/)
profile: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" profiling/profile-run.sh --record 20

lint: $(STAMP)
	$(BIN)/ruff check svc tests bench deploy/k8s tools
	$(BIN)/ruff format --check svc tests bench deploy/k8s tools
	shellcheck profiling/*.sh

typecheck: $(STAMP)
	$(BIN)/mypy --strict svc

## check: what CI runs
check: lint typecheck test

## bench: every benchmark, quick mode (tables on stdout, JSON + PNG in bench/results/)
## bench: every benchmark in full (about 20 minutes), then bench/README.md from the results
bench: $(STAMP)
	for name in decode pipeline e2e roadmap export gc; do $(BIN)/python -m bench $$name || exit 1; done
	$(BIN)/python -m bench report

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
