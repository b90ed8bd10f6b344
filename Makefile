# One virtual environment in .venv, created on first use; torch is pinned to the 2.13.0 CPU build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[onnx,sbd,test]'
	touch $@

setup: $(VENV)/.installed

# The project's main job: train, evaluate and show a small PSPNet on synthetic scenes (about 5 minutes on 2 cores).
run: setup
	$(VENV)/bin/pspnet demo --out runs/demo --force

# Lint and format checks first (seconds), then the suite.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
