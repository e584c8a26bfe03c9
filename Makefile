# dsls — `make help` lists the targets. Every target installs what is missing first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast clean

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install the venv module (e.g. apt-get install python3-venv) or set PYTHON=..."; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv and install dsls with its dev extra (skipped when up to date)

demo: $(STAMP)  ## toy grid25: train AE, train D, search; prints the table and writes runs/toy/<time>/samples.png
	$(PY) experiments/run_pipeline.py --config-dir configs/toy $(ARGS)

test: $(STAMP)  ## run the whole test suite (CPU, offline, a few minutes)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## the suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:  ## remove runs/ and caches (keeps .venv)
	rm -rf runs lightning_logs wandb .pytest_cache
