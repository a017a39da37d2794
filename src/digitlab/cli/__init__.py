"""The `digitlab` command line: thin layers that parse flags and call the package.

- `commands`: the command itself (`main`, `build_parser`), one function per subcommand;
- `flags`: the flags commands share (--data, --runs-dir, one flag per `TrainConfig` field);
- `sweep`: `digitlab sweep`'s flags, turned into a sweep run or resumed.

    from digitlab import cli
    cli.main(["train", "--epochs", "5"])     # what `digitlab train --epochs 5` runs
"""

from digitlab.cli.commands import EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED, build_parser, main

__all__ = ["EXIT_BAD_INPUT", "EXIT_BUG", "EXIT_INTERRUPTED", "build_parser", "main"]
