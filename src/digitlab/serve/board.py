"""digitlab tensorboard: TensorBoard on the logs that `digitlab train --tensorboard` writes.

    digitlab train --model deep --tensorboard        # as chapter 9 does: RUN/tensorboard/events.out.tfevents.*
    digitlab tensorboard runs/RUN                    # http://127.0.0.1:6006, until Ctrl-C
    make tensorboard RUN=runs/RUN                    # the same, after setting up

The logs hold one point per epoch of `epoch_accuracy` and `epoch_loss`, each for
`train` and `validation` (the tags Keras's own TensorBoard callback writes). TensorBoard
runs in this process, on loopback unless `--host` says otherwise, and stops on Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

from pathlib import Path

from digitlab import runs
from digitlab.serve import settings

LOG_FOLDER = "tensorboard"
DEFAULT_PORT = 6006


def log_dir(run: runs.Run) -> Path:
    """The run's TensorBoard folder, or a RunError saying how to make one."""
    folder = run.file(LOG_FOLDER)
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        raise runs.RunError(
            f"The run {run.path} has no TensorBoard logs. Train with them: "
            f"digitlab train --tensorboard (then digitlab tensorboard RUN)."
        )
    return folder


def serve(run: runs.Run, host: str = settings.HOST, port: int = DEFAULT_PORT) -> int:
    """Serves TensorBoard on the run's logs until interrupted; returns its exit status."""
    settings.check_port(port)
    folder = log_dir(run)
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(logdir=str(folder), host=host, port=port)
    return board.main()
