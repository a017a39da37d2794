# The two commands README shows: `make train` and `make test`. Each sets up everything first.
# `make check` is the fast tier to run before every commit (minutes; no full-length training,
# no killed processes, servers or browsers). `make lab` opens the chapter notebooks in JupyterLab;
# `make tensorboard RUN=runs/NAME` shows a run's `--tensorboard` logs.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser containers node wasm wasm-toolchain train check lint test lab tensorboard lock

setup: $(STAMP)

# LOCK=requirements/lock.txt installs the exact versions `make lock` wrote, as CI does (.ci/run) and the
# Docker image does (requirements/image.txt); without it, pyproject.toml's ranges.
LOCK ?=

# A virtual environment with digitlab (its C kernel built from setup.py), its test tools and JupyterLab,
# and the project's Jupyter kernel: this environment's Python, under the notebooks' kernel name.
$(STAMP): pyproject.toml setup.py $(wildcard src/digitlab/engine/*.c) $(LOCK)
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(if $(LOCK),--constraint $(LOCK)) -e '.[test,lab]'
	$(PYTHON) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (digitlab)" > /dev/null
	touch $(STAMP)

# Debian's Chromium for the browser tests (the page and the report), installed when missing.
browser:
	@command -v chromium > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium > /dev/null; fi; }

# Debian's Node.js for the browser engine's tests in node (tests/test_wasm.py), installed when missing.
node:
	@command -v node > /dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs > /dev/null; fi; }

# Debian's podman (on runc: crun cannot start containers where cgroups are hybrid) and debootstrap, for the
# Docker image's test (tests/test_docker.py), installed when missing and apt-get can; else that test skips.
containers:
	@command -v podman > /dev/null && command -v runc > /dev/null && command -v debootstrap > /dev/null || { \
	  if ! command -v apt-get > /dev/null; then echo "No apt-get: install podman to run the docker tests." >&2; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq podman buildah runc debootstrap > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq podman buildah runc debootstrap > /dev/null; fi; }

# The browser's engine: the C engine's sources (src/digitlab/engine/*.c) built for wasm32 with Debian's clang,
# lld and wasi-libc (its headers: the engine brings its own malloc, clock and threads, _wasm.c), installed when
# missing. Three builds, committed so that a pip install needs no toolchain: engine.wasm (SIMD128),
# engine-threads.wasm (SIMD128, shared memory and atomics: threads on Web Workers) and engine-scalar.wasm (for
# browsers without SIMD). No FMA and -ffp-contract=off: the same bits as the native portable path. A build
# from the same sources gives the same bytes (tests/test_wasm.py checks the committed files).
WASM_CC ?= clang-19
comma := ,
WASM_OUT ?= $(CURDIR)/src/digitlab/serve/static/engine
WASM_SOURCES := $(addprefix src/digitlab/engine/,_kernels.c _dense.c _train.c _deep.c _wasm.c)
WASM_FLAGS := --target=wasm32-wasi --sysroot=/usr -nostdlib -O3 -std=c99 -ffp-contract=off -mbulk-memory -Wall \
	-Wl,--no-entry,--import-memory,--initial-memory=2097152,--max-memory=2147483648,-z,stack-size=1048576 \
	$(addprefix -Wl$(comma)--export=,__stack_pointer digitlab_train_epoch digitlab_train_epoch_deep digitlab_infer_deep digitlab_evaluate \
	  digitlab_kernels_simd \
	  digitlab_csr_count digitlab_csr_fill)
wasm: wasm-toolchain
	cd src/digitlab/engine && $(WASM_CC) $(WASM_FLAGS) -msimd128 -o $(WASM_OUT)/engine.wasm $(notdir $(WASM_SOURCES))
	cd src/digitlab/engine && $(WASM_CC) $(WASM_FLAGS) -msimd128 -matomics -Wl,--shared-memory \
	  -o $(WASM_OUT)/engine-threads.wasm $(notdir $(WASM_SOURCES))
	cd src/digitlab/engine && $(WASM_CC) $(WASM_FLAGS) -o $(WASM_OUT)/engine-scalar.wasm $(notdir $(WASM_SOURCES))
	@ls -l $(WASM_OUT)/*.wasm

wasm-toolchain:
	@command -v $(WASM_CC) > /dev/null && command -v wasm-ld-19 > /dev/null && test -f /usr/include/wasm32-wasi/stdlib.h || { \
	  if ! command -v apt-get > /dev/null; then echo "No apt-get: install clang 19, lld 19 and wasi-libc to build the engine." >&2; exit 1; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq clang-19 lld-19 wasi-libc > /dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq clang-19 lld-19 wasi-libc > /dev/null; fi; }

# requirements/: every dependency's exact version, resolved by uv from pyproject.toml for Python 3.11 on
# x86-64 Linux (the image's and CI's platform). Keeps the pins that still fit; UPGRADE=1 takes the newest.
# lock.txt is CI's (everything), image.txt the image's (no test tools), gpu.txt the GPU variant's JAX CUDA
# wheels, build.txt the wheel's build tools.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock: setup
	$(PYTHON) -m pip install --quiet uv
	$(UV_COMPILE) pyproject.toml --extra lab --extra test --output-file requirements/lock.txt
	$(UV_COMPILE) pyproject.toml --extra lab --constraint requirements/lock.txt --output-file requirements/image.txt
	echo 'jax[cuda12]' | $(UV_COMPILE) - --constraint requirements/lock.txt --output-file requirements/gpu.txt
	$(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
	  | $(UV_COMPILE) - --output-file requirements/build.txt

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
CHECK_TIER := not slow and not heavy and not browser and not docker
check: setup node lint
	$(PYTHON) -m pytest -ra -m "$(CHECK_TIER)" -n auto --dist loadfile

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite: slow reproduction tests, killed processes, servers and browsers included, with a
# branch-coverage report of src/digitlab at the end (a report, not a gate).
test: setup browser containers node wasm-toolchain
	$(PYTHON) -m pytest -ra --durations=25 --cov --cov-report=term
