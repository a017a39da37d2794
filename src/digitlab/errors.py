"""The one base class for the errors a user can cause and fix.

Every bad input digitlab meets (a flag, a configuration, a data file, an image, a run or
sweep folder, a full disk) raises a subclass of `DigitlabError` whose message says what
was wrong and what to do. The command line prints exactly these as one `error:` line and
exits with status 2; the server answers them with a 4xx. Any other exception is a bug in
digitlab: the command line shows its traceback and says where to report it.

    from digitlab import errors
    raise errors.DigitlabError("Give either --index N or image files, not both.")
    try: ...
    except errors.DigitlabError as error: print(f"error: {error}")

It lives in a module of its own, imported by every package, so that no subpackage has to
import its (possibly half-loaded) parent to reach it. The subclasses live beside the code
that raises them: `config.ConfigError`, `data.DataError`, `imaging.ImageError`,
`runs.RunError`, `atomic.WriteError`, `engine.spec.UnsupportedModel`. `SweepError` is here, beside
the base: every module of `digitlab.sweep` and the command line's sweep flags raise it, so no one
module of them is its home.

It derives from ValueError, as Keras's own bad-input errors do, so that code calling
digitlab from Python can catch either.
"""


class DigitlabError(ValueError):
    """Something the user gave or did is wrong; the message says what, and what to do instead."""


class SweepError(DigitlabError):
    """A sweep cannot start or resume: bad grid, bad folder, Ray unavailable."""
