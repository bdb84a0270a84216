"""Who may reach what the server serves: a Host allow-list, cross-origin refusal, CORS, and credentials.

One ASGI middleware on the outer FastAPI app sees every request, for the API, its docs and whatever is
mounted on it (the web UI), so a route added later is guarded without being listed anywhere. In order:

1. Host (DNS rebinding): a page on a name the attacker controls can be re-pointed at 127.0.0.1 and then
   read the server's answers as same-origin. Unless the server listens publicly (--listen without
   --allowed-hosts), the Host header must be localhost, 127.0.0.1, [::1], the address the connection came
   in on, or a name given with --allowed-hosts; anything else gets 400.
2. Origin (CSRF): a request that may change state (any method but GET, HEAD and OPTIONS, and every
   websocket) that carries an Origin header must come from the server's own origin or one allowed by
   --cors-allow-origins / --cors-allow-origins-regex; anything else gets 403. Requests without an Origin
   (curl, scripts, A1111 clients) are not from a browser page and pass.
3. Credentials: with --api-auth/--auth, every request needs the basic credentials of a configured user or
   the session cookie of a web UI login, except the login page itself and its static files. The API's
   routes still check for an API user on top of this.

CORS headers are sent only for the configured origins (none by default), by Starlette's CORSMiddleware
outside this one, which also answers preflights: they never carry credentials.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from sdstudio.server.auth import UNAUTHORIZED_DETAIL, basic_credentials, credentials_match, parse_credentials
from sdstudio.server.deps import ServerOptions

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
POLICY_VIOLATION = 1008  # websocket close code for a refused handshake


def host_name(host: str) -> str:
    """The name part of a Host header or URL netloc, lower-case: `[::1]:7860` → `::1`, `Example.:80` → `example`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


@dataclass(frozen=True)
class AccessRules:
    """What the access middleware admits; built from the server's options."""

    users: tuple[tuple[str, str], ...] = ()
    """(user, password) pairs admitted anywhere: the API's and the web UI's; empty means no credentials needed."""
    allowed_hosts: frozenset[str] | None = frozenset()
    """Host names admitted besides loopback and the connection's own address; None admits any Host."""
    cors_origins: tuple[str, ...] = ()
    cors_origin_regex: str | None = None

    @classmethod
    def from_options(cls, options: ServerOptions) -> AccessRules:
        """The rules for a server started with `options`."""
        pairs = set(parse_credentials(options.api_auth).items()) | set(parse_credentials(options.ui_auth).items())
        hosts = [host_name(name) for name in options.allowed_hosts]
        # Listening publicly, clients reach the server by whatever name or address the network gives it;
        # credentials (required with --listen unless --insecure) are then what keeps a rebound page out.
        any_host = "*" in hosts or (options.listen and not hosts)
        return cls(
            users=tuple(sorted(pairs)),
            allowed_hosts=None if any_host else frozenset(hosts),
            cors_origins=tuple(options.cors_allow_origins),
            cors_origin_regex=options.cors_allow_origins_regex,
        )

    def host_allowed(self, host: str | None, local_address: str | None) -> bool:
        """Whether a request with this Host header, arriving on `local_address`, is admitted."""
        if self.allowed_hosts is None or host is None:
            # No Host header is an HTTP/1.0 client, never a browser page: nothing to rebind.
            return True
        name = host_name(host)
        return name in LOOPBACK_NAMES or name in self.allowed_hosts or name == local_address

    def cors_allowed(self, origin: str) -> bool:
        """Whether `origin` is one --cors-allow-origins or --cors-allow-origins-regex names."""
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        return self.cors_origin_regex is not None and re.fullmatch(self.cors_origin_regex, origin) is not None

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Whether a state-changing request from a page at `origin` is admitted (its own origin or a CORS one)."""
        same_origin = host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()
        return same_origin or self.cors_allowed(origin)

    def cors_settings(self) -> dict[str, Any]:
        """Starlette CORSMiddleware's arguments: A1111's for the configured origins, no CORS headers otherwise."""
        if not self.cors_origins and self.cors_origin_regex is None:
            return {"allow_origins": ()}
        return {
            "allow_origins": self.cors_origins,
            "allow_origin_regex": self.cors_origin_regex,
            "allow_methods": ["*"],
            "allow_headers": ["*"],
            "allow_credentials": True,
        }


class LoginPage:
    """The web UI's login form, once one is mounted: the paths it needs before a login, and its sessions.

    The server is built before the UI is mounted on it, so the UI attaches this afterwards (`launch` does).
    """

    def __init__(self) -> None:
        self._has_session: Callable[[Mapping[str, str]], bool] | None = None
        self._open_paths: frozenset[str] = frozenset()
        self._open_prefixes: tuple[str, ...] = ()

    def attach(
        self, has_session: Callable[[Mapping[str, str]], bool], open_paths: Iterable[str], open_prefixes: Iterable[str]
    ) -> None:
        """`has_session(cookies)` says whether a request is logged in; the paths are served to anyone."""
        self._has_session = has_session
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)

    @property
    def attached(self) -> bool:
        """Whether a login form exists (then a browser logs in there rather than with a basic-auth prompt)."""
        return self._has_session is not None

    def is_open(self, path: str) -> bool:
        """Whether `path` is part of the login page, served before a login."""
        return path in self._open_paths or path.startswith(self._open_prefixes)

    def has_session(self, cookies: Mapping[str, str]) -> bool:
        """Whether these cookies belong to a logged-in web UI session."""
        return self._has_session is not None and self._has_session(cookies)


class AccessMiddleware:
    """The Host, Origin and credential checks above, for every HTTP request and websocket."""

    def __init__(self, app: ASGIApp, rules: AccessRules, login: LoginPage) -> None:
        self.app, self.rules, self.login = app, rules, login

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await WebSocketClose(POLICY_VIOLATION, bytes(refusal.body).decode())(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        """The answer refusing this request, or None to let it through."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        server = scope.get("server")
        if not self.rules.host_allowed(host, server[0] if server else None):
            return JSONResponse(
                {"detail": f"Host {host!r} is not served here; start with --allowed-hosts to add a name"},
                status_code=400,
            )
        origin = headers.get("origin")
        changes_state = scope["type"] == "websocket" or scope["method"] not in SAFE_METHODS
        if origin is not None and changes_state and not self.rules.origin_allowed(origin, host):
            return JSONResponse(
                {"detail": f"cross-origin request from {origin!r} refused; allow it with --cors-allow-origins"},
                status_code=403,
            )
        if self.rules.users and not self.admitted(scope["path"], headers):
            # Without a login form the browser's own basic-auth prompt is the way in; with one, the prompt
            # would pop up over the page whenever a session ends, so API clients send credentials unasked.
            challenge = {} if self.login.attached else {"WWW-Authenticate": "Basic"}
            return JSONResponse({"detail": UNAUTHORIZED_DETAIL}, status_code=401, headers=challenge)
        return None

    def admitted(self, path: str, headers: Headers) -> bool:
        """Whether a request needing credentials carries them (or asks for the login page)."""
        if self.login.is_open(path):
            return True
        given = basic_credentials(headers.get("authorization"))
        if given is not None and credentials_match(self.rules.users, *given):
            return True
        return self.login.has_session(cookie_parser(headers.get("cookie", "")))


def install_access_control(api: FastAPI, options: ServerOptions) -> LoginPage:
    """Guard every route of `api`, mounts included; returns the LoginPage a web UI attaches to."""
    rules = AccessRules.from_options(options)
    login = LoginPage()
    api.add_middleware(AccessMiddleware, rules=rules, login=login)
    # Added last, so outermost: it answers preflights, and refused answers still carry the CORS headers an
    # allowed origin needs to read them. Its presence also makes Gradio's own CORS middleware (which would
    # answer any localhost origin) stand down.
    api.add_middleware(CORSMiddleware, **rules.cors_settings())
    return login
