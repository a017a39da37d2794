# The two commands README shows: `make train` and `make test`. Each sets up everything first.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser train test

setup: $(STAMP)

# A virtual environment with digitlab, its test tools and TensorFlow (for `digitlab bench`).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[test,bench]'
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

# The whole suite, slow reproduction tests included.
test: setup browser
	$(PYTHON) -m pytest -ra
