"""Checks every request model shares: finite numbers, ranges, writable text, errors naming the field.

A request value that is NaN, infinite, out of range or not writable text is refused (or,
for text, repaired) where the request is built, so it never reaches a sampler (a black
image), an allocator or a file name (a 500).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from sdstudio.errors import InvalidRequest

_SURROGATES = re.compile("[\ud800-\udfff]")


def writable_text(text: str) -> str:
    """`text` with lone surrogates (which no file, PNG chunk or JSON answer can hold) replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


def writable_strings(value: Any) -> Any:
    """`value` (decoded JSON, possibly deeply nested) with `writable_text` applied to every string and key.

    Containers are copied, never changed in place; the walk is iterative, so nesting depth costs no stack.
    """
    if isinstance(value, str):
        return writable_text(value)
    if not isinstance(value, (dict, list, tuple)):
        return value
    root = _copy(value)
    pending = [root]
    while pending:
        container = pending.pop()
        keys = container.keys() if isinstance(container, dict) else range(len(container))
        for key in keys:
            item = container[key]
            if isinstance(item, str):
                container[key] = writable_text(item)
            elif isinstance(item, (dict, list, tuple)):
                container[key] = _copy(item)
                pending.append(container[key])
    return root


def _copy(container: dict | list | tuple) -> dict | list:
    if isinstance(container, dict):
        return {writable_text(k) if isinstance(k, str) else k: v for k, v in container.items()}
    return list(container)


def between(low: float, high: float) -> AfterValidator:
    """A field check: the value (None passes) must lie in [low, high]; the error names the range."""

    def check(value: float | None) -> float | None:
        if value is not None and not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value:g}")
        return value

    return AfterValidator(check)


def invalid_request(exc: ValidationError) -> InvalidRequest:
    """The first problem of a pydantic error as an InvalidRequest naming its field."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    name = loc[0] if loc else "request"
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, InvalidRequest):
        return ctx_error
    if err.get("type") == "extra_forbidden":
        return InvalidRequest(name, "unknown field")
    message = str(err.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    return InvalidRequest(name, message)


class CheckedModel(BaseModel):
    """A model of untrusted input: every float must be finite, every string is made writable."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _writable_text(cls, data: Any) -> Any:
        return writable_strings(data)


class CheckedRequest(CheckedModel):
    """A CheckedModel whose bad values raise InvalidRequest naming the field (engine and service requests).

    API bodies use CheckedModel itself: FastAPI reports their errors with the full location.
    """

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_request(exc) from None
