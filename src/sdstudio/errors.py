"""User-facing error types: each carries a one-line message meant for a person.

Front ends catch `SdStudioError` and print its message (CLI), turn it into a 4xx answer
(API) or a notice (UI); anything else is a bug and may show a traceback.
"""

from __future__ import annotations


class SdStudioError(Exception):
    """An error caused by input, files or environment that a user can fix."""


class InvalidRequest(SdStudioError):
    """A request parameter is invalid; `field` names it (A1111 field name)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


class NotFound(SdStudioError):
    """A named model, sampler, upscaler or file does not exist."""


class Conflict(SdStudioError):
    """The request does not fit the state of what it names (a task id in use, a task that already finished)."""


class Unavailable(SdStudioError):
    """What would run the work is gone for now (the cluster's replicas died under it); a client may try again."""


class UnsafeFileError(SdStudioError):
    """A model file asked for something other than tensors and plain data."""


class ModelLoadError(SdStudioError):
    """A model file could not be read or recognised."""


class NotImplementedYet(SdStudioError):
    """A feature that is planned but not built yet."""
