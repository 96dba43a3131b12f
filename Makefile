# One entry point for a fresh machine: `make pipeline` (set up + dvc repro), `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup pipeline retrain replicates test test-fast lint bench bench-readme report compare ui clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

# The page `dvc plots` fill, with Vega, Vega-Lite and Vega-Embed inlined so the plots render
# offline. npm installs the versions pinned in .dvc/plots/package-lock.json; without npm the page
# loads them from DVC's CDN (one line says so). .dvc/config names the committed CDN page
# (.dvc/plots/cdn.html), so a clone without `make setup` draws plots too; setup points this
# clone's .dvc/config.local (untracked) at the page it builds.
PLOTS_DIR := .dvc/plots
ifneq ($(shell command -v npm 2>/dev/null),)
VEGA := $(PLOTS_DIR)/node_modules/.installed
$(VEGA): $(PLOTS_DIR)/package-lock.json
	npm ci --prefix $(PLOTS_DIR) --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@
endif

$(PLOTS_DIR)/page.html: $(VENV)/.installed src/prunelab/reporting/plots_page.py $(VEGA)
	python -m prunelab.reporting.plots_page $(PLOTS_DIR)

setup: $(VENV)/.installed $(PLOTS_DIR)/page.html  ## .venv with the project and dev tools; plots page
	@grep -qs '^ *html_template = plots/page.html' .dvc/config.local || \
		dvc config --local plots.html_template plots/page.html

pipeline: setup                      ## set up, then run the whole study with DVC
	dvc repro

# The second pipeline file: retraining (fine-tuning, IMP and lottery tickets), tickets at
# initialisation, pruning during training (and L0), the architectures study on MNIST-1D.
retrain: setup                       ## the second pipeline: fine-tuning, IMP, at-init, during-training, L0, archs
	dvc repro stages/retrain/dvc.yaml
	dvc repro --force --single-item report   # reports/study.md gains the retraining section

# The replicated study: five seeds as the DVC experiment `replicates` (in a temporary copy:
# the workspace keeps its params), then the generated blocks (README's results, the docs/*.md
# pages' criteria, replicates, savings, retraining) and a published copy of its report
# (reports/replicates/) from that experiment. The seeds' stages land in DVC's
# run-cache, so `dvc exp run -S 'train.seeds=[0,1,2,3,4]'` afterwards restores them.
SEEDS ?= [0,1,2,3,4]
replicates: setup                    ## the study on five seeds; README and docs/ blocks from it
	-dvc exp remove replicates >/dev/null 2>&1
	dvc exp run --temp -n replicates -S 'train.seeds=$(SEEDS)'
	python -m prunelab report --rev replicates --readme README.md --publish reports/replicates

test: setup                          ## set up, then run every test (unit, end-to-end, servers)
	python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

test-fast: setup                     ## the fast subset: no end-to-end or server tests (~3 min)
	python -m pytest -n 2 -m "not e2e and not server"

lint: setup
	ruff check src stages tests bench

bench: setup                         ## the speed benchmark; writes bench/results/ (README untouched)
	python bench/run.py

bench-readme: setup                  ## the benchmark, its table into docs/bench.md's bench block
	python bench/run.py --readme README.md

report: setup                        ## the generated blocks from the metrics, into README and docs/
	python -m prunelab report --readme README.md

# LeNet-5, a ResNet and an LSTM as DVC experiments named lenet5, resnet, lstm (each in a temporary
# copy: the workspace stays the MLP's), then all four side by side: plots/compare_arch.png and the
# architectures block (docs/architectures.md);
# and the four graph architectures (MLP, LeNet-5, ResNet, LSTM) on MNIST and MNIST-1D: the archs
# stage's table, figure and section (reports/sections/archs.md).
compare: setup                       ## the one-shot study on LeNet-5, ResNet, LSTM beside the MLP; the archs study
	dvc repro
	dvc repro stages/retrain/dvc.yaml:archs
	for arch in lenet5 resnet lstm; do \
		dvc exp remove $$arch >/dev/null 2>&1; \
		dvc exp run --temp -n $$arch -S model.arch=$$arch || exit 1; \
	done
	python -m prunelab compare workspace lenet5 resnet lstm --readme README.md
	dvc repro --force --single-item report   # reports/study.md gains the architectures section

# MLflow 3 opens an experiment in its GenAI view; workflowType=machine_learning opens the runs.
# First, runs left RUNNING by a killed process are closed: after a `kill -9` the next `dvc repro`
# may restore every stage from the run-cache, and no stage would open the store to close them.
UI_STORE := sqlite:///$(CURDIR)/mlflow.db
# No job runner: its huey consumers serve MLflow's GenAI jobs, which the study never submits.
ui: export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false
ui: setup                            ## the MLflow UI on the project's store, loopback only
	@python -m prunelab tracking close-stale --uri $(UI_STORE)
	@echo "prunelab runs: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning"
	mlflow ui --backend-store-uri $(UI_STORE) --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
