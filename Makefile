# `make test` and `make demo` work on a fresh machine: they create .venv, install the CPU build of
# torch first (a plain `torch` requirement would pull a multi-GB CUDA build), then mmsieve.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmsieve-installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,train,dedup,ray]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check mmsieve tests bench hub_scripts
	$(BIN)/ruff format --check mmsieve tests bench hub_scripts

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/mmsieve demo --output demo_output

bench: $(STAMP)
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/score.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/memory.py

clean:
	rm -rf demo_output bench_output .pytest_cache .ruff_cache
