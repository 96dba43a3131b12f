# One entry point for a fresh machine: `make pipeline` (set up + dvc repro), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup pipeline test test-fast lint bench report ui clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed            ## create .venv and install the project with its dev tools

pipeline: setup                      ## set up, then run the whole study with DVC
	dvc repro

test: setup                          ## set up, then run every test (unit, end-to-end, servers)
	python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: setup                     ## the fast subset: no end-to-end or server tests (< 1 min)
	python -m pytest -n 2 -m "not e2e and not server"

lint: setup
	ruff check src stages tests bench

bench: setup                         ## the speed benchmark; updates bench/results/ and README
	python bench/run.py --readme README.md

report: setup                        ## the results table from the metrics files, into README
	python -m prunelab.report --readme README.md

ui: setup                            ## the MLflow UI on the project's store, loopback only
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
