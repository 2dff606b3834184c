# The two commands of the README:
#   make examples   install into .venv and run every example against the emulator
#   make test       install into .venv (with test tools), run ruff, mypy and the tests
# and for developers:
#   make mutants    replay the hand-made mutants of scripts/mutants.py (slow; not part of make test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: examples test lint e2e docs mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs happen once per change of pyproject.toml (a stamp file per extra), not on every run:
# setuptools prints its "Editable installation" notice at every editable install.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

examples: $(VENV)/.installed-examples
	$(BIN)/python example/run_examples.py

# ruff, mypy, then the tests in 3 processes (pytest-xdist: many tests wait on timers, so 3 beat 2 on 2 cores)
test: $(VENV)/.installed-test
	$(BIN)/python -m ruff check snailjob example tests scripts
	$(BIN)/python -m mypy snailjob example
	$(BIN)/python -m pytest -n 3 --dist loadgroup

# each mutant (one small slip in snailjob/) applied to a temporary copy of the checkout, whose
# tests must then fail; about 2 minutes.  One mutant: .venv/bin/python scripts/mutants.py NAME
mutants: $(VENV)/.installed-test
	$(BIN)/python scripts/mutants.py

e2e: $(VENV)/.installed-test,e2e
	SNAILJOB_E2E=1 $(BIN)/python -m pytest tests/e2e

# NO_MKDOCS_2_WARNING: mkdocs-material prints an end-of-life banner at import otherwise (no setting in
# mkdocs.yml turns it off)
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache
