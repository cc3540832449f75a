# crowdloop: every target creates and uses .venv on its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup demo serve test test-fast lint format bench load-checks worker beat clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the pinned requirements

demo: setup ## Run the loop offline on SQLite, then serve it running by itself on http://127.0.0.1:$(PORT)/
	$(BIN)/python manage.py demo --reset --serve --port $(PORT)

serve: setup ## Serve the web UI with a Celery worker and beat (the loop runs by itself)
	$(BIN)/python manage.py serve --port $(PORT)

test: setup ## Run the tests (SQLite unless DATABASE_URL is set)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 0
	$(BIN)/pytest -q

lint: setup ## ruff check, lint-imports (ml <- annotate <- training <- review <- loop), and mypy
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: setup ## ruff format and fix imports
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## Run the benchmarks (see bench/README.md)
	$(BIN)/python bench/run_all.py

load-checks: setup ## The reliability load checks L1-L5 on PostgreSQL (bench/reliability_load.py; slow)
	$(BIN)/python bench/reliability_load.py $(ARGS)

worker: setup ## A Celery worker for the default and train queues (Redis, or the filesystem broker)
	REMAP_SIGTERM=SIGQUIT $(BIN)/celery -A config worker -Q default,train --concurrency 2 --loglevel INFO

beat: setup ## Celery beat: periodic pull, the loop's reconciler, nightly retrain
	$(BIN)/celery -A config beat --loglevel INFO

clean: ## Remove the demo database, media and artifacts (keeps .venv)
	rm -rf var
