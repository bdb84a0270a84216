"""One cancel token per job, carried from the job queue to the sampler loop.

The queue creates it with the job, `/interrupt` and `/skip` set it, the service hands it to
processing, and the sampler loop checks it before every model evaluation (A1111's
`state.interrupted` / `state.skipped`, without the global).
"""

from __future__ import annotations

import threading


class CancelToken:
    """Interrupt (stop the job, keep what is finished) and skip (abandon the current batch); thread-safe."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()
        self._skipped = threading.Event()

    def interrupt(self) -> None:
        """Stop after the current step; finished images (and the current partial one) are kept."""
        self._interrupted.set()

    def skip(self) -> None:
        """Abandon the current batch and go on with the next one."""
        self._skipped.set()

    @property
    def interrupted(self) -> bool:
        """Whether the job was asked to stop."""
        return self._interrupted.is_set()

    @property
    def skipped(self) -> bool:
        """Whether the current batch was asked to be abandoned."""
        return self._skipped.is_set()

    def clear_skip(self) -> None:
        """A new batch starts: a skip applied to the one before."""
        self._skipped.clear()

    def wait_interrupted(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for an interrupt; True if one came (for work that sleeps)."""
        return self._interrupted.wait(timeout)
