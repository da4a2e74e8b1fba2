# Two entry points: `make quickstart` (the main job) and `make test` (`make test-fast` skips the slow tests).
# Both create .venv with the project installed if it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sesahand-installed
ARGS ?=

.PHONY: quickstart test test-fast setup clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP)

quickstart: $(STAMP)
	$(PY) tools/quickstart.py $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check handrecon synth tools tests
	$(PY) -m pytest -q -n 2 tests

test-fast: $(STAMP)
	$(VENV)/bin/ruff check handrecon synth tools tests
	$(PY) -m pytest -q -n 2 -m "not slow" tests

clean:
	rm -rf $(VENV) runs
