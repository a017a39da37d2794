# digitlab's image: the book's chapter notebooks in JupyterLab, and every digitlab command, with the exact
# versions of requirements/image.txt. docs/docker.md has the commands for bash, PowerShell and cmd.exe,
# how MNIST gets in, and the image's measured size and build times.
#
#   docker build -t digitlab .
#   docker run --rm -p 8888:8888 -v "$PWD/runs:/home/digitlab/runs" digitlab
#   docker run --rm -v "$PWD/runs:/home/digitlab/runs" digitlab digitlab train --epochs 20
#
# Build arguments:
#   VARIANT=gpu   adds JAX's CUDA 12 wheels (requirements/gpu.txt); run it with --gpus all. Untested: no GPU
#                 was available where this image is built and tested.
#   BASE=...      another Python 3.11 image on Debian bookworm (the test builds a stand-in for the official
#                 one where no image registry can be reached).
# Behind a proxy that inspects TLS, give pip that proxy's CA bundle as a build secret (used for the downloads,
# never stored in the image): docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t digitlab .
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS base
# TensorFlow's CPU build, a dependency, has wheels for x86-64 only.
RUN [ "$(uname -m)" = x86_64 ] || { echo "digitlab's image runs on linux/amd64 only (TensorFlow's CPU build has" \
    "no $(uname -m) wheels): build and run it with --platform linux/amd64 (emulated on ARM machines)." >&2; exit 1; }
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8

# digitlab as a wheel, its C kernels compiled; the compiler stays in this stage.
FROM base AS wheel
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY requirements/build.txt /tmp/requirements/
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python -m pip install -r /tmp/requirements/build.txt
COPY pyproject.toml setup.py README.md /src/
COPY src /src/src
# setup.py's kernels are optional (a machine without a compiler still installs digitlab); here they must be built.
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/dist/*.whl')[0]).namelist(); \
missing = [part for part in ('digitlab/engine/_kernels', 'digitlab/serve/static/index.html') \
           if not any(name.startswith(part) for name in names)]; \
sys.exit(f'the wheel lacks {missing}: see the compiler output above' if missing else 0)"

FROM base AS image
# tini is PID 1: it passes docker stop's SIGTERM to the command (Jupyter, digitlab train or serve) and reaps zombies.
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home --shell /bin/bash digitlab
ENV VIRTUAL_ENV=/opt/digitlab \
    PATH=/opt/digitlab/bin:$PATH
# The dependencies, from the lock only: a change to digitlab's code reuses this layer.
COPY requirements/image.txt requirements/gpu.txt /tmp/requirements/
ARG VARIANT=cpu
RUN --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    case "$VARIANT" in \
      cpu) extra= ;; \
      gpu) extra="-r /tmp/requirements/gpu.txt" ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    python -m venv /opt/digitlab \
    && python -m pip install -r /tmp/requirements/image.txt $extra \
    && python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (digitlab)" \
    && rm -rf /tmp/requirements
COPY scripts/healthcheck.py /usr/local/lib/digitlab/healthcheck.py
# The home folder is writable by any user, so that `docker run --user "$(id -u):$(id -g)"` (files in a mounted
# runs folder owned by the host's user) can keep Keras's cache, Jupyter's files and edited notebooks there.
COPY notebooks /home/digitlab/notebooks
RUN mkdir -p /home/digitlab/runs /home/digitlab/.keras/datasets \
    && chown -R digitlab:digitlab /home/digitlab && chmod -R a+rwX /home/digitlab
COPY --from=wheel /dist /tmp/dist
RUN python -m pip install --no-deps --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist && python -m pip check

USER digitlab
WORKDIR /home/digitlab
ENV HOME=/home/digitlab
# Runs land in /home/digitlab/runs (mount a host folder there); Keras keeps a downloaded MNIST in
# /home/digitlab/.keras (mount a named volume there), or mount your mnist.npz and set DIGITLAB_DATA.
EXPOSE 8888 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/digitlab/healthcheck.py"]
ENTRYPOINT ["tini", "--"]
# JupyterLab on every interface of the container (only the port you publish reaches it), with its token, in
# notebooks/. Any other command replaces it: docker run ... digitlab digitlab train --epochs 20
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/digitlab/notebooks"]
