"""Lets `python -m digitlab ...` work like the `digitlab` command, and ends it without Python's teardown.

Once a command has done its work, Python's own teardown (freeing every module and object of
Keras, JAX, Matplotlib, Ray) took 1.1-1.2 s more on a loaded 2-core machine before the process
ended (docs/engine.md, "Start-up"). Everything a command writes is written (atomically, synced)
before it returns, so the process ends at once: exit handlers run, output is flushed, then
`os._exit`. Where a thread of digitlab's that is not a daemon still runs, Python ends as usual.

From then on a Ctrl-C or SIGTERM ends the process at once (`interrupts.end_at_once`), its output
flushed first, so the command's last lines are not lost with the buffers.
"""

import atexit
import os
import sys
import threading

from digitlab import interrupts
from digitlab.cli import main


def exit_now(code: int) -> None:
    """Ends the process with `code` after the exit handlers and a flush, skipping Python's teardown; a
    Ctrl-C or SIGTERM meanwhile ends it at once (the signal's default action), without a traceback."""
    _flush()
    interrupts.end_at_once()
    others = [thread for thread in threading.enumerate() if thread is not threading.main_thread()]
    if any(thread.is_alive() and not thread.daemon for thread in others):
        raise SystemExit(code)  # Python waits for such threads; so does this.
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # A closed pipe: nothing more can reach it.
            pass


def run() -> None:
    """`digitlab ...` from the command line: the command, then `exit_now` with its status."""
    exit_now(main())


if __name__ == "__main__":
    run()
