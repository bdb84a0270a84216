"""HTTP basic auth for the API (`--api-auth user:pass[,user2:pass2]`), A1111-compatible."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from sdstudio.errors import InvalidRequest

UNAUTHORIZED_DETAIL = "Incorrect username or password"


def parse_credentials(spec: str | None) -> dict[str, str]:
    """`user:pass,user2:pass2` → {user: pass}; an empty spec means no auth."""
    credentials: dict[str, str] = {}
    if not spec:
        return credentials
    for item in spec.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user:
            raise InvalidRequest("api-auth", f"expected user:password, got {item.strip()!r}")
        credentials[user] = password
    return credentials


def credentials_match(credentials: Iterable[tuple[str, str]], user: str, password: str) -> bool:
    """Whether `user:password` is one of the (user, password) pairs, in time that tells nothing of which part differs.

    The whole `user:pass` is compared with every configured pair, with no early exit, so neither a known
    user name nor a matching prefix answers faster.
    """
    given = f"{user}:{password}".encode()
    matched = False
    for known_user, known_password in credentials:
        matched |= hmac.compare_digest(given, f"{known_user}:{known_password}".encode())
    return matched


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` header value; None when absent or malformed."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def basic_auth_dependency(credentials: dict[str, str]):
    """A FastAPI dependency that admits only the given users (constant-time compare)."""
    security = HTTPBasic(auto_error=False)

    # FastAPI's documented idiom: under postponed annotations, Annotated[..., Depends(security)] cannot see the
    # local `security` and FastAPI would silently read `given` as a query parameter.
    def check(given: HTTPBasicCredentials | None = Depends(security)) -> str:  # noqa: B008
        if given is not None and credentials_match(credentials.items(), given.username, given.password):
            return given.username
        raise HTTPException(status_code=401, detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Basic"})

    return check
