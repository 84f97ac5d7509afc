# The MLOps Foundations workbook. `make help` lists the targets.
# Every target that needs the environment runs scripts/setup.sh first; it is idempotent
# (keyed on the hash of requirements.lock), so a second call only verifies.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# PYTHON=/path/to/python3.12 make ... picks the interpreter for a new .venv (3.11-3.13);
# without it, set-up takes the first supported python3 on PATH.

# A project-local Airflow: its SQLite metadata database, logs and config live in .airflow/.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PATH := $(BIN):$(PATH)

.PHONY: help setup demo test test-fast lint format lab site site-serve airflow dags-test airflow-stop airflow-cluster airflow-cluster-stop screenshots bench lock check-platforms clean distclean

help: ## list the targets
	@echo "MLOps Foundations workbook"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

setup: ## create .venv from the lock file, register the kernel, provision MNIST
	@scripts/setup.sh

demo: setup ## run the course end to end on the embedded defaults, then print a summary
	@$(BIN)/workbook demo

# The whole suite runs on two pytest-xdist workers (TEST_WORKERS=1: one process). Much of it
# waits on one core (imports, kernels and servers starting), so the second worker fills
# that time. --dist loadscope keeps each test file (and each notebook's nbval cells) on one
# worker, so module fixtures (the cluster, the grading batch) are set up once; with
# --no-loadscope-reorder the files go out slowest first (tests/conftest.py: SLOWEST_FILES).
TEST_WORKERS ?= 2

test: setup ## the whole test suite: lint, unit tests, notebooks, DAGs
	@scripts/setup-system.sh
	@$(MAKE) --no-print-directory lint
	@$(BIN)/pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

test-fast: setup ## lint + unit and light integration tests (no kernels, Airflow runs, browsers): ~2 min
	@$(MAKE) --no-print-directory lint
	@$(BIN)/pytest tests -m "not (slow or kernel or airflow or browser or sandbox or cluster)"

lint: ## ruff lint and format check (notebooks and DAGs included), then the import contracts
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@out=$$($(BIN)/lint-imports --no-cache 2>&1) || { echo "$$out"; exit 1; }; \
		echo "$$out" | grep -E ' KEPT$$|^Contracts:'

format: ## apply ruff's formatting and safe fixes
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

lab: setup ## JupyterLab on 127.0.0.1, opened at the course notebooks
	@scripts/lab.sh

# SOLUTIONS=1: the instructor build (each exercise's solution under it, collapsed), kept apart
# in site-instructors/ so the learner site in site/ never carries solutions.
SITE_FLAGS := $(if $(filter 1 yes true,$(SOLUTIONS)),--solutions)

site: setup ## the course as a static website in site/ (offline; SOLUTIONS=1: instructor build)
	@$(BIN)/workbook site build $(SITE_FLAGS)

site-serve: site ## build, then serve the site on http://127.0.0.1:8000 (PORT=... to change)
	@$(BIN)/workbook site serve $(SITE_FLAGS) --port $(or $(PORT),8000)

airflow: setup ## the Airflow UI on http://127.0.0.1:8080 (api-server, scheduler, dag-processor)
	@scripts/airflow.sh start

dags-test: setup ## run one DAG for one date on the project's Airflow: make dags-test DAG=lab1_1_first_dag DATE=2024-01-01
	@test -n "$(DAG)" || { echo "usage: make dags-test DAG=<dag_id> [DATE=YYYY-MM-DD, default today]" >&2; exit 2; }
	@$(BIN)/airflow db migrate > /dev/null
	@$(BIN)/airflow dags test $(DAG) $(or $(DATE),$(shell date -u +%F))

airflow-stop: ## stop exactly the Airflow processes `make airflow` started
	@scripts/airflow.sh stop

airflow-cluster: setup ## distributed Airflow on loopback: PostgreSQL, Redis, CeleryExecutor, 2 Celery workers (UI :8090)
	@scripts/setup-system.sh
	@$(BIN)/python -m workbook.cluster start

airflow-cluster-stop: ## stop exactly the processes `make airflow-cluster` started (its database stays)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m workbook.cluster stop; fi

screenshots: setup ## refresh docs/images/: the lifecycle figure, and Lab 1.1's Airflow UI pictures from a real UI run
	@scripts/setup-system.sh
	@$(BIN)/workbook site figures
	@$(BIN)/pytest -q -p no:cacheprovider tests/test_airflow_ui.py
	@mkdir -p docs/images
	@for view in grid graph; do \
		cp artifacts/screenshots/lab1_1_first_dag_$$view.png docs/images/lab1_1_$$view.png; \
		echo "docs/images/lab1_1_$$view.png"; done

bench: setup ## speed benchmarks (not tests): training and DAG parse times
	@$(BIN)/workbook bench --dags
	@$(BIN)/workbook bench

lock: ## re-resolve requirements.lock for every platform (UPGRADE=1: newest allowed), then check-platforms
	@scripts/lock.sh

check-platforms: setup ## ask the registry: does the lock install on Linux/macOS, Python 3.11-3.13?
	@$(BIN)/python scripts/check_platforms.py --sizes

clean: airflow-stop airflow-cluster-stop ## remove runs, Airflow's homes (the cluster's database too) and caches (keeps .venv and data/)
	rm -rf runs registry .airflow .airflow-cluster artifacts site site-instructors .pytest_cache .ruff_cache .import_linter_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: clean ## also remove .venv and data/ (the next make sets everything up again)
	rm -rf $(VENV) data
