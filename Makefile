# The two commands README shows: `make train` and `make test`. Each sets up everything first.
# `make check` is the fast tier to run before every commit (minutes; no full-length training,
# no killed processes, servers or browsers).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser train check test

setup: $(STAMP)

# A virtual environment with digitlab (its C kernel built from setup.py) and its test tools.
$(STAMP): pyproject.toml setup.py src/digitlab/engine/_kernels.c
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test]'
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

# Debian's Chromium for the browser tests (the page and the report), installed when missing.
browser:
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium > /dev/null; fi; }

# Chapter 5 exactly: the shallow net with the book's settings, 200 epochs.
train: setup
	$(VENV)/bin/digitlab train

# The fast tier: unit tests on shrunken configurations, one pytest worker per core (whole files
# to a worker, so each module's fixtures are built once).
CHECK_TIER := not slow and not heavy and not browser
check: setup
	$(PYTHON) -m pytest -ra -m "$(CHECK_TIER)" -n auto --dist loadfile

# The whole suite: slow reproduction tests, killed processes, servers and browsers included.
test: setup browser
	$(PYTHON) -m pytest -ra
