# bortify — set-up commands. Both work on a fresh machine: they create .venv, install, and run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The tested versions of every other dependency (constraints; pyproject.toml keeps ranges for library users).
LOCK ?= requirements/lock.txt
LOCK_VENV ?= build/lock-venv

.PHONY: venv install install-test demo test bench lock clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(LOCK) "$(TORCH_SPEC)"
	$(PIP) install -q -c $(LOCK) -e ".[test]"
	touch $@

venv install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/bortify run recipes/demo.yaml --output_dir runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

# Refresh the lock: a fresh venv from pyproject.toml's ranges (no -c), the full test suite, then pip freeze
# (minus torch, pinned by TORCH_SPEC, and bortify itself). The lock changes only if the suite passes.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[test]"
	$(LOCK_VENV)/bin/python -m pytest -q tests
	v=$$($(LOCK_VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	{ sed -n '/^#/p' $(LOCK); \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|bortify)([=@ ]|$$)' \
	    | sed "s/\$$/ ; python_version >= \"$$v\"/"; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "$(LOCK) refreshed; review it with git diff and commit it."

clean:
	rm -rf $(VENV) runs build *.egg-info
