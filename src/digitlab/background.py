"""A function run in a thread of its own, its value or its exception handed back to the caller's thread.

    loading = background.Background(data.load, path)   # starts at once
    ...                                                 # meanwhile: imports, Ray's start...
    loaded = loading.result()                           # waits; raises here what the function raised

For work that waits on the disk or on C code with Python's lock let go (reading and hashing MNIST, the
engine's sparse rows) beside work of the main thread (importing Keras, starting Ray): `startup`'s data
beside `digitlab train`'s import of Keras, the sweep's data beside Ray's import and its results beside
Ray's shutdown (`sweep.runner`).
"""

from __future__ import annotations

import threading
from typing import Any


class Background:
    """`function(*args, **kwargs)` in a daemon thread from now on; `result()` waits for it and returns its
    value, or raises its exception in the caller's thread."""

    def __init__(self, function, *args, name: str = "digitlab-background", **kwargs):
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(function, args, kwargs), name=name, daemon=True)
        self.thread.start()

    def _run(self, function, args, kwargs) -> None:
        try:
            self.value = function(*args, **kwargs)
        except BaseException as error:  # Raised again in the caller's thread, by `result`.
            self.error = error

    def wait(self) -> None:
        """Waits until the function has returned or raised."""
        self.thread.join()

    def result(self):
        """The function's value, once it has returned (its exception, raised here, if it raised one)."""
        self.wait()
        if self.error is not None:
            raise self.error
        return self.value
