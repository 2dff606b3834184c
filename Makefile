# The two commands of the README:
#   make examples   install into .venv and run every example against the emulator
#   make test       install into .venv (with test tools) and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: examples test lint e2e docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

examples: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[examples]"
	$(BIN)/python example/run_examples.py

test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ruff check snailjob example tests scripts
	$(BIN)/python -m mypy snailjob example
	$(BIN)/python -m pytest

e2e: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,e2e]"
	SNAILJOB_E2E=1 $(BIN)/python -m pytest tests/e2e

docs: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache
