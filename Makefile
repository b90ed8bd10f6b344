# One virtual environment in .venv, created on first use; torch is pinned to the 2.13.0 CPU build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test clean browser

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[onnx,sbd,serve,test]'
	touch $@

setup: $(VENV)/.installed

# The project's main job: train, evaluate and show a small PSPNet on synthetic scenes (about 5 minutes on 2 cores).
run: setup
	$(VENV)/bin/pspnet demo --out runs/demo --force

# The page's browser test drives Debian's chromium with chromium-driver (a browser download at install time is not
# possible here): installed when missing and apt-get can (as root); without them that one test is skipped.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get update -q && apt-get install -y -q chromium chromium-driver) >/dev/null \
				|| echo "warning: chromium not installed; the browser test will be skipped"; \
		else echo "warning: no chromium and no root apt-get; the browser test will be skipped"; fi; \
	fi

# Lint and format checks first (seconds), then the suite.
test: setup browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
