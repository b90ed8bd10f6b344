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

# The project's main job (becomes 'pspnet demo' once training lands).
run: setup
	$(VENV)/bin/pspnet info --model pspnet50 --size 473 473

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
