# towerline — make setup | demo | test | bench | lint
# Every target is idempotent: the venv is (re)installed only when pyproject.toml or
# constraints.txt changed since the last install; Debian packages only when missing.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= .towerline/demo
# Two pytest processes: most tests wait on a broker, a child process or a timeout, so two
# halve the suite on a 2-core machine (12.4 -> 7.8 min here). PYTEST_ARGS= runs it in one.
PYTEST_ARGS ?= -n 2

.PHONY: setup system-packages demo test bench lint clean

setup: $(STAMP) system-packages

# prometheus/promtool and chromium, from Debian when missing (the tests use the real tools).
system-packages:
	@.ci/system-packages.sh

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "error: $(PYTHON) not found. towerline needs Python 3.11 (set PYTHON=/path/to/python3.11)."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,dask]"
	@$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)
	@echo "towerline installed in $(VENV) — try: $(BIN)/towerline --help"

demo: setup
	$(BIN)/towerline demo --workdir $(DEMO_DIR)

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	@set -e; for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .towerline .pytest_cache .hypothesis
