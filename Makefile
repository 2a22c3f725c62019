# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench soak fixtures clean migration check-migrations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## Run every stage on the bundled synthetic cohort (SQLite, no server).
demo: $(STAMP)
	$(BIN)/cohort run --source fixtures/cohort --db sqlite:///cohort.db --out report

## The test suite (the command CI runs).
test: $(STAMP)
	$(BIN)/ruff check connector tests
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check connector tests

## Regenerate the committed default cohort (deterministic from the seed).
fixtures: $(STAMP)
	rm -rf fixtures/cohort
	$(BIN)/cohort synth --patients 79 --sites 2 --seed 2023 --out fixtures/cohort

bench: $(STAMP)
	$(BIN)/python -m benchmarks

## The long reliability soak (changing server, 30% faults, kills); SOAK_SECONDS=300 by default.
SOAK_SECONDS ?= 300
soak: $(STAMP)
	COHORT_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -q -s -p no:cacheprovider \
		tests/reliability/test_reliability_soak.py

## Schema migrations: `make migration MSG="what changed"` after editing connector/db/models.py.
migration: $(STAMP)
	$(BIN)/python -m connector.db.migrations revision -m "$(MSG)"

check-migrations: $(STAMP)
	$(BIN)/python -m connector.db.migrations check

clean:
	rm -rf $(VENV) cohort.db report .pytest_cache
