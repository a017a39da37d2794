"""Ctrl-C and SIGTERM while training: a request to stop, acted on between batches.

Python turns Ctrl-C into a KeyboardInterrupt raised wherever the main thread happens to be.
During training that is usually inside JAX, TensorFlow or Keras: in a garbage-collection
callback, which swallows it (training then runs to the end as if nothing was pressed), or
half-way through dispatching a computation, after which the process can hang at exit. Both
were seen here, about once in twenty interrupts of `digitlab train --engine fit`.

So while `requests_stop()` is active, the first Ctrl-C or SIGTERM only records the request;
training calls `check()` where stopping is safe (before each batch of Keras `fit`, after each
epoch of the fast engine), and that raises the KeyboardInterrupt there, in digitlab's own code.
A second Ctrl-C or SIGTERM stops at once, as Python would.

`sigterm_as_ctrl_c()` is where a command makes SIGTERM (a closed terminal, `kill`) stop as
Ctrl-C does, and `sigterm_kept()` puts that handler back after a library that replaces it
(`ray.init` makes SIGTERM exit the process at once). Every SIGTERM handler of digitlab is set here.
`end_at_once()` is for a command whose work is done and written (`python -m digitlab`'s exit): a
signal then ends the process by its default action, not with a KeyboardInterrupt in an exit handler.

`held()` is the other way round: for a step of a few microseconds that must not be cut in two
(renaming a set of files into place), a signal waits until the step is done.

    with interrupts.requests_stop():
        for batch in batches:
            interrupts.check()
            train(batch)
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requests = 0


def check() -> None:
    """Raises KeyboardInterrupt if a stop was requested since `requests_stop()` began."""
    if _requests:
        raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does: a command that trains, sweeps or
    evaluates then stops the same way for both (saved, resumable, or its files untouched)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def end_at_once() -> None:
    """From now on Ctrl-C and SIGTERM end the process at once, by the signal's default action. For the
    exit of a command whose work is done and written: its exit handlers (JAX's, Ray's) are all that is
    left, and a KeyboardInterrupt raised in one came out as a traceback ("Exception ignored in atexit
    callback", tests/test_evaluation.py's SIGTERM at the end of `digitlab evaluate`)."""
    for number in SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_kept():
    """Puts the SIGTERM handler back after the block, which may replace it (`ray.init` does). Only the
    main thread can set handlers; elsewhere the block runs as it is."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def _request(signum, frame) -> None:
    global _requests
    _requests += 1
    if _requests > 1:
        raise KeyboardInterrupt


@contextlib.contextmanager
def requests_stop():
    """Turns Ctrl-C and SIGTERM into requests that `check()` acts on; restores the handlers after.

    Signal handlers belong to the main thread: elsewhere (a Ray trial's thread) this does nothing,
    and whoever runs the thread stops it its own way.
    """
    global _requests
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # getsignal gives None for a handler installed outside Python; the default stands in for it.
    # A signal ignored on purpose (a job started with `&` by a script ignores Ctrl-C) stays ignored.
    previous = {
        number: signal.getsignal(number) or signal.SIG_DFL
        for number in SIGNALS
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    _requests = 0
    for number in previous:
        signal.signal(number, _request)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _requests = 0


@contextlib.contextmanager
def held():
    """Holds Ctrl-C and SIGTERM back for a short step that must not be cut in two (renaming a set of
    files into place); one that arrives meanwhile is delivered right after the step, to the handler
    that was there before. Only the main thread can hold signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {
        number: signal.getsignal(number) or signal.SIG_DFL
        for number in SIGNALS
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    for number in previous:
        signal.signal(number, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if arrived:
            signal.raise_signal(arrived[0])
