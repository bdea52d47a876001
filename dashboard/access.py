"""Who may reach the worker's web server, and with what: the bind rule, the Host and Origin rules, and
the token.

- Bind: a non-loopback address (0.0.0.0, ::, "", a LAN address) needs DONORCAST_DASHBOARD_TOKEN of at
  least 16 characters. The rule runs on the address the server really binds (faust's `web_bind`, which
  `--web-bind` can change after the app was built), right before the socket is opened.
- Host: only the names this server is meant to be reached by (127.0.0.1, localhost, [::1] on the port it
  listens on, and the host of DONORCAST_PUBLIC_URL when a token is set) get an answer; anything else is
  421, so a DNS-rebinding page cannot read viewer data through the victim's browser.
- Origin: a request a browser sent from another origin is 403; a request that changes state or runs the
  model (any method but GET/HEAD/OPTIONS) must be `Content-Type: application/json` (415 otherwise), which
  no cross-origin form can send without a CORS preflight we never answer.
- Paths: only donorcast's own routes are served; faust's built-in views (/, /table/, /router/, ...)
  answer 404.
- Token: with a token set, every route but /healthz and /metrics needs it; the cookie set after the
  first authorised request is HttpOnly, SameSite=Strict, and Secure when DONORCAST_PUBLIC_URL is https.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dashboard.encode import SECURITY_HEADERS
from infra.errors import InputError
from infra.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

TOKEN_COOKIE = "donorcast_token"
MIN_TOKEN_CHARS = 16
# Counters only, no chat or viewer data: scrapers and health checks reach them by any name, without a token.
TOKEN_EXEMPT = frozenset({"/healthz", "/metrics", "/metrics/summary"})
# donorcast's own routes (dashboard, JSON API, stream_agents/views.py); nothing else is answered.
SERVED_PREFIXES = ("/dashboard", "/api/", "/healthz", "/metrics", "/score", "/streams")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in {"localhost", "ip6-localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name or "" (all interfaces): reachable from elsewhere


def dashboard_token(settings: Settings) -> str | None:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else ""
    return token or None


def check_token(token: str | None) -> None:
    """A set token must be worth having: 16+ characters, no surrounding whitespace."""
    if token is None:
        return
    if token != token.strip():
        raise InputError("DONORCAST_DASHBOARD_TOKEN starts or ends with whitespace; use a random string such as "
                         "the output of `python -c 'import secrets; print(secrets.token_urlsafe(24))'`")
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"DONORCAST_DASHBOARD_TOKEN is too short ({len(token)} characters; at least "
                         f"{MIN_TOKEN_CHARS}): use a random string such as the output of "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`")


def describe_host(host: str) -> str:
    wildcard = host.strip("[]") in ("", "0.0.0.0", "::")  # noqa: S104 - naming, not binding
    return f"{host!r} (not a loopback address: all interfaces)" if wildcard else f"{host!r} (not a loopback address)"


def check_bind(settings: Settings, host: str | None = None) -> None:
    """Refuse to serve viewer data on a network address without a good access token. `host` is the
    address really bound (faust's web_bind); by default the configured DONORCAST_WEB_HOST."""
    host = settings.web_host if host is None else host
    token = dashboard_token(settings)
    check_token(token)
    if not is_loopback(host) and token is None:
        raise InputError(
            f"refusing to serve the dashboard on {describe_host(host)} without an "
            f"access token: set DONORCAST_DASHBOARD_TOKEN to a random string of at least {MIN_TOKEN_CHARS} "
            "characters, or bind to 127.0.0.1 or ::1 (DONORCAST_WEB_HOST, --web-bind)"
        )


def url_host(host: str) -> str:
    """The host as a URL writes it: IPv6 literals in brackets, the wildcard addresses as 127.0.0.1."""
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0", "::"):  # noqa: S104 - naming, not binding
        return "127.0.0.1"
    return f"[{bare}]" if ":" in bare else bare


@dataclass(frozen=True)
class AccessPolicy:
    """What the access middleware enforces, from the settings."""

    token: str | None
    public_host: str | None  # "name" or "name:port" as a browser sends it in Host, when a token is set
    secure_cookie: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        token = dashboard_token(settings)
        public = urlsplit(settings.public_url) if settings.public_url else None
        public_host = None
        if public is not None and public.hostname and token is not None:
            name = url_host(public.hostname).lower()
            public_host = f"{name}:{public.port}" if public.port else name
        return cls(token=token, public_host=public_host,
                   secure_cookie=public is not None and public.scheme == "https")

    def allowed_hosts(self, port: int | None) -> frozenset[str]:
        names = {f"{name}:{port}" for name in LOOPBACK_NAMES} if port else set()
        if self.public_host:
            names.add(self.public_host)
        return frozenset(names)


def _refusal(status: int, message: str, **headers: str) -> web.Response:
    from aiohttp import web

    return web.json_response({"error": message}, status=status, headers={**SECURITY_HEADERS, **headers})


def _listening_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None


def _origin_host(origin: str) -> str | None:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None  # "null" (sandboxed frames, file://) and anything odd
    name = url_host(parts.hostname).lower()
    return f"{name}:{parts.port}" if parts.port else name


def refusal_of(policy: AccessPolicy, request: web.Request) -> web.Response | None:
    """Why this request gets no answer (a response to send instead), or None to let it through."""
    path = request.path
    if path != "/" and not path.startswith(SERVED_PREFIXES):  # "/" is redirected to the dashboard
        return _refusal(404, "not found")  # faust's own web views are off
    exempt = path in TOKEN_EXEMPT
    allowed = policy.allowed_hosts(_listening_port(request))
    host = request.headers.get("Host", "").lower()
    if exempt:
        allowed |= {host}  # counters only: any name may read them (scrapers, container health checks)
    elif host not in allowed:
        return _refusal(421, f"this server does not answer for Host {host[:100]!r}: use "
                             f"{' or '.join(sorted(allowed))} (or set DONORCAST_PUBLIC_URL with a token)")
    origin = request.headers.get("Origin")
    if origin is not None and _origin_host(origin) not in allowed:
        return _refusal(403, "cross-origin request refused")
    site = request.headers.get("Sec-Fetch-Site", "")
    if site in ("cross-site", "same-site") and request.headers.get("Sec-Fetch-Mode") != "navigate":
        return _refusal(403, "cross-site request refused")  # e.g. <img src> pointing at a model-running route
    if request.method not in SAFE_METHODS and request.content_type != "application/json":
        return _refusal(415, f"{request.method} {path} takes Content-Type: application/json")
    if policy.token is not None and not exempt:
        given = supplied_token(request)
        if given is None or not hmac.compare_digest(given.encode(), policy.token.encode()):
            return _refusal(401, "dashboard token required: Authorization: Bearer <token>, X-Donorcast-Token, "
                                 "or ?token=<token> (DONORCAST_DASHBOARD_TOKEN)",
                            **{"WWW-Authenticate": 'Bearer realm="donorcast"'})
    return None


def supplied_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return (request.headers.get("X-Donorcast-Token") or request.query.get("token")
            or request.cookies.get(TOKEN_COOKIE))


def access_middleware(policy: AccessPolicy) -> Any:
    """aiohttp middleware enforcing the policy on every route of the server (faust's views included)."""
    from aiohttp import web

    @web.middleware
    async def enforce(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        refusal = refusal_of(policy, request)
        if refusal is not None:
            return refusal
        if request.path == "/":
            raise web.HTTPFound("/dashboard/" + (f"?{request.query_string}" if request.query_string else ""))
        response = await handler(request)
        token = policy.token
        if token is not None and request.cookies.get(TOKEN_COOKIE) != token and not response.prepared \
                and request.path not in TOKEN_EXEMPT:
            # The page's own requests (EventSource, downloads, assets) then need no token in their URL.
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/",
                                secure=policy.secure_cookie)
        return response

    return enforce
