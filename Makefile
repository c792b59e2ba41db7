# lcip — make targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lcip-setup
REGION ?= demo
JOBS ?= 2
ARGS ?=

.DEFAULT_GOAL := help
DRY_RUN ?=
.PHONY: help setup data map demo test test-slow lint format docs bench gpu-check priors report experiment acceptance clean

help:  ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PY) -c 'import torch' 2>/dev/null || $(PYTHON) scripts/check_disk.py $(VENV)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)  ## Create .venv and install lcip with pinned torch (idempotent, quick when done)

data: $(STAMP)  ## Fetch a region, write its manifest: make data REGION=chesapeake_ny | REGION=place PLACE="Ithaca, NY" YEAR=2022 [BBOX=minx,miny,maxx,maxy] [DRY_RUN=1]
	$(VENV)/bin/lcip-acquire region=$(REGION) $(if $(DRY_RUN),acquire.dry_run=true) \
	  $(if $(PLACE),"region.source.place='$(PLACE)'") $(if $(BBOX),"region.source.bbox=[$(BBOX)]") \
	  $(if $(YEAR),region.source.year=$(YEAR)) $(ARGS)

map: $(STAMP)  ## Map a place in one command: make map PLACE="Ithaca, NY" YEAR=2022 [BBOX=minx,miny,maxx,maxy] [DRY_RUN=1]; products in outputs/maps/<name>/
	$(VENV)/bin/lcip-map $(if $(DRY_RUN),map.dry_run=true) \
	  $(if $(PLACE),"region.source.place='$(PLACE)'") $(if $(BBOX),"region.source.bbox=[$(BBOX)]") \
	  $(if $(YEAR),region.source.year=$(YEAR)) $(ARGS)

demo: $(STAMP)  ## Run the whole pipeline on the generated demo region (CPU, no internet); updates README's results
	$(VENV)/bin/lcip-demo $(ARGS)
	$(PY) scripts/readme_results.py outputs/demo/results.md README.md

acceptance: $(STAMP)  ## Real-data acceptance run on ../shared/realdata's WV patches; table into BENCHMARKS.md
	$(VENV)/bin/lcip-demo experiment=wv_acceptance $(ARGS)
	$(PY) scripts/readme_results.py outputs/acceptance/chesapeake_wv_patches/results.md BENCHMARKS.md acceptance

report: $(STAMP)  ## Gather evaluated runs into one report (md, csv, html) beside the published numbers
	$(VENV)/bin/lcip-report $(ARGS)

experiment: $(STAMP)  ## Run one paper experiment's stages: make experiment EXP=chesapeake_ny_qr [ARGS=...]
	$(PY) scripts/run_experiment.py $(EXP) $(ARGS)

test: $(STAMP)  ## Run tests, lint (ruff) and types (mypy); whole test modules on WORKERS=2 processes (WORKERS=0: one)
	$(VENV)/bin/ruff check lcip tests scripts
	$(VENV)/bin/ruff format --check lcip tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n $(or $(WORKERS),2) --dist loadfile --no-loadscope-reorder $(ARGS)

test-slow: $(STAMP)  ## Run only the slow tests
	$(VENV)/bin/pytest -q -m slow $(ARGS)

lint: $(STAMP)  ## Lint and type-check only
	$(VENV)/bin/ruff check lcip tests scripts
	$(VENV)/bin/ruff format --check lcip tests scripts
	$(VENV)/bin/mypy

format: $(STAMP)  ## Auto-format and fix lint
	$(VENV)/bin/ruff format lcip tests scripts
	$(VENV)/bin/ruff check --fix lcip tests scripts

docs: $(STAMP)  ## Build the API reference (Sphinx autodoc; warnings are errors) into docs/_build/html
	$(VENV)/bin/sphinx-build -b html -W --keep-going -E -q docs docs/_build/html $(ARGS)
	@echo "API reference: docs/_build/html/index.html"

priors: $(STAMP)  ## Build priors: make priors REGION=demo PRIOR=nlcd JOBS=2
	$(VENV)/bin/lcip-prior region=$(REGION) prior=$(or $(PRIOR),nlcd) jobs=$(JOBS) $(ARGS)

bench: $(STAMP)  ## Run the benchmarks (figures go to BENCHMARKS.md): loader vs TorchGeo, prior vs I/O floor, blur
	$(PY) scripts/bench_loader.py
	$(PY) scripts/bench_prior.py
	$(PY) scripts/bench_blur.py
	$(PY) scripts/bench_epitome.py --sizes 256 512

gpu-check: $(STAMP)  ## On a GPU machine (< 8 min): training steps, transfer share, prediction, epitome; table for BENCHMARKS.md
	PYTHON=$(PY) scripts/gpu_check.sh $(ARGS)

clean:  ## Remove outputs (keeps .venv)
	rm -rf outputs lightning_logs multirun
