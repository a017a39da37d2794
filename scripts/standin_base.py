"""A stand-in for the official `python:3.11-slim-bookworm` image, built from Debian's own packages.

The Dockerfile starts from that image. Where no image registry can be reached (this project's CI
machines reach only the package registries), it cannot be pulled, so the docker test builds this
stand-in and tags it with the official name: `debootstrap` of Debian 12 (bookworm) with Debian's
Python 3.11, which offers the commands the official image offers and the Dockerfile uses
(`python`, `python3`, `pip` in /usr/local/bin, `python -m venv`, apt-get). The stand-in is cached,
keyed by a hash of this recipe: as a tar file under the cache folder, and as the tagged image itself,
whose label carries the hash. A base of that name without the label is a real one, and is kept.

    python scripts/standin_base.py              # with podman (as root: debootstrap needs it)
    python scripts/standin_base.py --rebuild    # ignore the cache
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
LABEL = "org.digitlab.standin-recipe"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# python3.11-venv needs python3.11-distutils, a virtual package that debootstrap does not resolve by itself.
PACKAGES = ["python3.11", "python3.11-venv", "python3-distutils", "ca-certificates"]

# Run inside the new root: /usr/local becomes a virtual environment of Debian's Python, so that
# `python`, `python3` and `pip` are in /usr/local/bin and pip installs there, as in the official image.
SETUP = f"""
set -e
python3.11 -m venv /usr/local
rm -f /usr/local/bin/activate* /usr/local/bin/Activate.ps1
cat > /etc/apt/sources.list <<EOF
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb {MIRROR}-security {SUITE}-security main
EOF
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
"""
CHANGES = [
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]


def recipe_hash() -> str:
    """A short hash of everything that makes the stand-in: a change to any of it builds a new one."""
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES, SETUP, *CHANGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitlab"


def _image_label(engine: list[str], image: str) -> str | None:
    """The stand-in label of `image`: None when there is no such image, "" for an image without it."""
    found = subprocess.run(
        [*engine, "image", "inspect", "--format", f'{{{{index .Labels "{LABEL}"}}}}', image],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        return None
    label = found.stdout.strip()
    return "" if label in ("", "<no value>") else label


def _debootstrap(tarball: Path, print_fn) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError(
            "debootstrap is needed to build the stand-in base image: apt-get install debootstrap (make test does)"
        )
    with tempfile.TemporaryDirectory(prefix="digitlab-standin-") as folder:
        root = Path(folder) / "root"
        print_fn(f"Building the stand-in for {BASE_IMAGE} with debootstrap ({SUITE}, {', '.join(PACKAGES)})")
        command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        subprocess.run(["chroot", str(root), "/bin/sh", "-c", SETUP], check=True, capture_output=True)
        partial = tarball.with_suffix(".partial")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.replace(tarball)


def ensure(engine: list[str], cache_dir: Path | None = None, rebuild: bool = False, print_fn=print) -> str:
    """Makes BASE_IMAGE available to `engine` (e.g. ["podman"]) and says which it is: real, cached or new."""
    label = _image_label(engine, BASE_IMAGE)
    wanted = recipe_hash()
    if label == "" and not rebuild:
        return f"{BASE_IMAGE} (a real one, found locally)"
    if label == wanted and not rebuild:
        return f"{BASE_IMAGE} (the stand-in {wanted}, already in the engine's storage)"
    tarball = (cache_dir or default_cache_dir()) / f"standin-{SUITE}-python3.11-{wanted}.tar"
    how = "from the cached tar"
    if rebuild or not tarball.is_file():
        _debootstrap(tarball, print_fn)
        how = "built now"
    changes = [arg for change in [*CHANGES, f"LABEL {LABEL}={wanted}"] for arg in ("--change", change)]
    subprocess.run([*engine, "import", *changes, str(tarball), BASE_IMAGE], check=True, capture_output=True)
    return f"{BASE_IMAGE} (the stand-in {wanted}, {how})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="podman", help="the container engine's command (default: podman)")
    parser.add_argument("--cache", type=Path, default=None, help=f"cache folder (default: {default_cache_dir()})")
    parser.add_argument("--rebuild", action="store_true", help="build it again, ignoring the cache (default: off)")
    args = parser.parse_args(argv)
    try:
        print(ensure(args.engine.split(), args.cache, args.rebuild))
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
