# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Reinstall when the pinned requirements or the package metadata change.
$(STAMP): $(BIN)/python requirements-dev.txt pyproject.toml
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deepshrink demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider --doctest-modules tests src/deepshrink

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --doctest-modules tests src/deepshrink

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-out build *.egg-info src/*.egg-info
