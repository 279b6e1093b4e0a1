# `make demo` and `make test` both build .venv on first use; nothing else is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-scale clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/archsim run --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not scale"

# The SAT paper's 68 architectures through `archsim run` (random weights, 2 images, PGD-1), with a per-model time table.
test-scale: $(STAMP)
	$(BIN)/python -m pytest -q -s -m scale

clean:
	rm -rf $(VENV) runs .pytest_cache
