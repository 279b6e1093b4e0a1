# `make demo` and `make test` both build .venv on first use; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-scale lint docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ray,lint]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/archsim run --out runs/demo

# One pytest worker per core (at most 4), each test file whole on one worker: a file's module fixtures (a Ray
# cluster, a trained run) are built once. Each worker runs torch on one thread, and the files go heaviest first, not
# in xdist's order by number of tests (both in archsim/conftest.py).
PARALLEL := -n logical --maxprocesses 4 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow and not scale"

# ruff (pyflakes, pycodestyle, isort, bugbear, complexity and size ceilings; 120 columns) and import-linter's contracts
# (the layers, no import cycles).
lint: $(STAMP)
	$(BIN)/ruff check archsim benchmarks scripts docs/examples
	$(BIN)/ruff format --check archsim benchmarks scripts docs/examples
	$(BIN)/lint-imports --no-cache

# The SAT paper's 68 architectures through `archsim run` (random weights, 2 images, PGD-1), with a per-model time table,
# and the cards extracted from its 69 architectures against the published ones.
test-scale: $(STAMP)
	$(BIN)/python -m pytest -q -s -m scale

# The documentation site, built strictly (a broken link fails). Its own venv: mkdocs-material needs a newer
# requests than torchattacks allows.
DOCS_VENV := .venv-docs
$(DOCS_VENV)/.installed: Makefile
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet 'mkdocs>=1.6' 'mkdocs-material>=9.5' 'mkdocstrings[python]>=0.25'
	touch $(DOCS_VENV)/.installed

docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet --site-dir site

clean:
	rm -rf $(VENV) $(DOCS_VENV) site runs .pytest_cache
