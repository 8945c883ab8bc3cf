# The two commands of the README: `make up` serves the example fleet, `make test` runs every check.
# Both create the virtual environment themselves on a fresh machine.
PY ?= python3
VENV ?= .venv
FLEET ?= examples/support_desk/fleet.yaml
HOST ?= 127.0.0.1
PORT ?= 8000
STATE_DIR ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed-stamp

.PHONY: up test lint typecheck install

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/raygent up $(FLEET) --host $(HOST) --port $(PORT) $(if $(STATE_DIR),--state-dir $(STATE_DIR))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(VENV)/bin/python -m pytest -q -rfEs $(PYTEST_ARGS)
