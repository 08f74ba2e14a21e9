# The two set-up commands of obsctl (each installs what it needs first):
#   make run    bring the simulated observatory up and show its live status until Ctrl-C
#   make test   the full test suite (lint + pytest), as CI runs it
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test install docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/obsctl run

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

docs: install
	$(VENV)/bin/obsctl pvs --markdown > docs/pv-reference.md
