# One virtual environment serves every target; it is rebuilt when the
# project's metadata or the torch pin changes.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test test-triton lint bench docs clean

$(STAMP): setup.py pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	bash demos/run_all.sh

test: $(STAMP) lint
	$(PY) -m pytest -q

# ruff (lint and format check) over the repository; mypy over the files listed in pyproject.toml
# (the probmod core and the circuit engine).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-triton: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m triton

bench: $(STAMP)
	bash benchmarks/run_all.sh

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site out .mypy_cache .ruff_cache
