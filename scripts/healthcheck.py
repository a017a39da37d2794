"""The Docker image's HEALTHCHECK: healthy while the container's server answers on its port.

The image runs this as `python /usr/local/lib/digitlab/healthcheck.py`. It reads the command lines of the
container's processes: JupyterLab (the image's default command) must answer `GET /api` on its port, and
`digitlab serve` must answer `GET /api/health` on its (a 401 or 403 where it asks for its token is an
answer); both are asked on 127.0.0.1 inside the container. A container running anything else (`digitlab
train`, a shell) is healthy while it runs. Exit status 0 is healthy, 1 unhealthy, with one line saying why.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

JUPYTER_PORT = 8888
SERVE_PORT = 8000


def _flag(argv: list[str], names: tuple[str, ...], default: int) -> int:
    """The value of `--name N` or `--name=N` for any of `names` in argv, or `default`."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return int(argv[index + 1])
            if arg.startswith(name + "="):
                return int(arg.split("=", 1)[1])
    return default


def server_urls(command_lines: list[list[str]]) -> list[str]:
    """The URLs that must answer for the servers among these command lines (argv lists)."""
    urls = []
    for argv in command_lines:
        names = [Path(arg).name for arg in argv]
        if any(name.startswith("jupyter-lab") or name.startswith("jupyter-server") for name in names[:2]):
            port = _flag(argv, ("--port", "--ServerApp.port"), JUPYTER_PORT)
            urls.append(f"http://127.0.0.1:{port}/api")
        elif "serve" in names and names.index("serve") > 0 and names[names.index("serve") - 1] == "digitlab":
            port = _flag(argv, ("--port",), SERVE_PORT)
            urls.append(f"http://127.0.0.1:{port}/api/health")
    return urls


def _command_lines() -> list[list[str]]:
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = path.read_bytes().split(b"\0")
        except OSError:  # The process ended while we looked.
            continue
        lines.append([arg.decode(errors="replace") for arg in argv if arg])
    return lines


def main() -> int:
    for url in server_urls(_command_lines()):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
        except urllib.error.HTTPError as error:
            # `digitlab serve --host 0.0.0.0` asks every request for its token: a 401 or 403 is its
            # answer, so it is up (the check holds no token, and needs none to see that).
            if error.code not in (401, 403):
                print(f"unhealthy: {url} answered {error.code} {error.reason}")
                return 1
        except (urllib.error.URLError, OSError) as error:
            print(f"unhealthy: {url} did not answer ({error})")
            return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
