# The two commands README shows: `make train` and `make test`. Each sets up everything first.
# `make check` is the fast tier to run before every commit (minutes; no full-length training,
# no killed processes, servers or browsers). `make lab` opens the chapter notebooks in JupyterLab;
# `make tensorboard RUN=runs/NAME` shows a run's `--tensorboard` logs.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser train check lint test lab tensorboard

setup: $(STAMP)

# A virtual environment with digitlab (its C kernel built from setup.py), its test tools and JupyterLab,
# and the project's Jupyter kernel: this environment's Python, under the notebooks' kernel name.
$(STAMP): pyproject.toml setup.py $(wildcard src/digitlab/engine/*.c)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,lab]'
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (digitlab)" > /dev/null
	touch $(STAMP)

# Debian's Chromium for the browser tests (the page and the report), installed when missing.
browser:
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium > /dev/null; fi; }

# Chapter 5 exactly: the shallow net with the book's settings, 200 epochs.
train: setup
	$(VENV)/bin/digitlab train

# The chapter notebooks in JupyterLab, with the project's kernel, on this machine only (loopback).
LAB_FLAGS := --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks
# Jupyter refuses to run as root unless told to; containers (and this project's CI) often run as root.
ifeq ($(shell id -u),0)
LAB_FLAGS += --allow-root
endif
lab: setup
	$(VENV)/bin/jupyter lab $(LAB_FLAGS)

# TensorBoard on a run's `digitlab train --tensorboard` logs: make tensorboard RUN=runs/NAME
tensorboard: setup
	@test -n "$(RUN)" || { echo "Name the run: make tensorboard RUN=runs/NAME" >&2; exit 2; }
	$(VENV)/bin/digitlab tensorboard "$(RUN)"

# The fast tier: lint and format (ruff) and types (mypy) first, so a slip fails in seconds, then the
# unit tests on shrunken configurations, one pytest worker per core (whole files to a worker, so each
# module's fixtures are built once).
CHECK_TIER := not slow and not heavy and not browser
check: setup lint
	$(PYTHON) -m pytest -ra -m "$(CHECK_TIER)" -n auto --dist loadfile

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite: slow reproduction tests, killed processes, servers and browsers included, with a
# branch-coverage report of src/digitlab at the end (a report, not a gate).
test: setup browser
	$(PYTHON) -m pytest -ra --durations=25 --cov --cov-report=term
