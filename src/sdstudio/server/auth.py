"""HTTP basic auth for the API (`--api-auth user:pass[,user2:pass2]`), A1111-compatible."""

from __future__ import annotations

from secrets import compare_digest

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from sdstudio.errors import InvalidRequest


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


def basic_auth_dependency(credentials: dict[str, str]):
    """A FastAPI dependency that admits only the given users (constant-time compare)."""
    security = HTTPBasic(auto_error=False)

    # FastAPI's documented idiom: under postponed annotations, Annotated[..., Depends(security)] cannot see the
    # local `security` and FastAPI would silently read `given` as a query parameter.
    def check(given: HTTPBasicCredentials | None = Depends(security)) -> str:  # noqa: B008
        if given is not None:
            expected = credentials.get(given.username)
            # Compare against something even for unknown users so timing says nothing.
            if compare_digest(given.password.encode(), (expected or "\0invalid").encode()) and expected is not None:
                return given.username
        raise HTTPException(
            status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
        )

    return check
