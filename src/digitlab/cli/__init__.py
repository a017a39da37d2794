"""The `digitlab` command line: thin layers that parse flags and call the package.

- `commands`: the command itself (`main`), one function per subcommand that calls the package;
- `parser`: its argument parser (`build_parser`), one small function per subcommand;
- `flags`: the flags commands share (--data, --runs-dir, one flag per `TrainConfig` field);
- `sweep`: `digitlab sweep`'s flags, turned into a sweep run or resumed.

    from digitlab import cli
    cli.main(["train", "--epochs", "5"])     # what `digitlab train --epochs 5` runs
"""

from digitlab.cli.commands import EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED, main
from digitlab.cli.parser import build_parser

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_INTERRUPTED", "build_parser", "main"]
