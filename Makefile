VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint demo bench gpu-check clean

# the distribution was called "seg" before it became partialpad-seg: its editable install is dropped first
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes seg 2>/dev/null || true
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the tests not marked slow (no end-to-end tool runs, no training): under a minute on 2 cores
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# ruff (lint + import order) over the code and tests, mypy over seg/, tools/ and bench/ (settings in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check seg tools bench tests
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) tools/demo.py

bench: $(STAMP)
	$(PY) bench/run_all.py

# the device check on one GPU, sections in priority order within a 330 s budget (bench/gpu_check.py --help)
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py --out work_dirs/gpu_check

clean:
	rm -rf work_dirs .pytest_cache
