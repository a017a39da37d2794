"""`digitlab serve`'s defaults and limits, and the checks of the values given for them: one home.

The command line's flags take their defaults from here, and so do the server (`app.serve`) and
its runs home (`live.RunsHome`); nothing here imports FastAPI or Keras, so the command
can check its flags (and that the port is free) before the seconds the server takes to import.

    from digitlab.serve import settings
    settings.check(port=8000, max_viewers=100)
    settings.check_port_free("127.0.0.1", 8000)    # one clear sentence if another program holds it
"""

from __future__ import annotations

import errno
import socket

from digitlab import errors

# Loopback: only this machine can reach the server (another host needs tokens: `serve.access`).
HOST = "127.0.0.1"
PORT = 8000
# The most event streams (pages following runs) open at once.
MAX_VIEWERS = 100
# `--class`: the most the runs folder may hold, in MB.
CLASS_CAP_MB = 2048.0


def check(port: int, max_viewers: int, class_cap_mb: float | None = None) -> None:
    """Refuses a port outside 1-65535 and a limit that is not positive, each with the flag to change."""
    check_port(port)
    if max_viewers < 1:
        raise errors.DigitlabError(f"--max-viewers must be a positive whole number, got {max_viewers}.")
    if class_cap_mb is not None and not class_cap_mb > 0:
        raise errors.DigitlabError(f"--class-cap-mb must be a positive number of MB, got {class_cap_mb}.")


def check_port(port: int) -> None:
    """Refuses a port outside 1-65535."""
    if not 0 < port < 65536:
        raise errors.DigitlabError(f"--port must be from 1 to 65535, got {port}.")


def check_port_free(host: str, port: int) -> None:
    """Binds `host:port` for a moment on each address of `host`, as uvicorn's asyncio server will, so
    that a port in use (or a host this machine does not have) is one clear sentence before the
    server says it is serving."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise errors.DigitlabError(f"Cannot listen on --host {host}: {error.strerror}.") from None
    for family, kind, protocol, _, address in dict.fromkeys(addresses):
        with socket.socket(family, kind, protocol) as probe:
            # As asyncio does: a port held only by closed connections (TIME_WAIT) counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise errors.DigitlabError(
                        f"Port {port} on {host} is already in use by another program (another `digitlab serve`?). "
                        "Stop it, or choose a free port with --port N."
                    ) from None
                if error.errno == errno.EACCES:
                    raise errors.DigitlabError(
                        f"Not permitted to listen on port {port} ({error.strerror}): ports below 1024 need "
                        "administrator rights. Choose one from 1024 up with --port N."
                    ) from None
                raise errors.DigitlabError(f"Cannot listen on {host}, port {port} ({error.strerror}).") from None
