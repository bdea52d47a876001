"""Who may see the dashboard: a loopback bind, or a token on every route."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from infra.errors import InputError
from infra.settings import Settings
from stream_agents.dashboard.encode import SECURITY_HEADERS

if TYPE_CHECKING:
    from aiohttp import web

TOKEN_COOKIE = "donorcast_token"
TOKEN_EXEMPT = frozenset({"/healthz", "/metrics", "/metrics/summary"})


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


def check_bind(settings: Settings) -> None:
    """Refuse to serve viewer data on a network address without an access token."""
    if not is_loopback(settings.web_host) and dashboard_token(settings) is None:
        raise InputError(
            f"refusing to serve the dashboard on {settings.web_host!r} (not a loopback address) without an "
            "access token: set DONORCAST_DASHBOARD_TOKEN to a long random string, or bind to 127.0.0.1 "
            "(DONORCAST_WEB_HOST)"
        )


def supplied_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return (request.headers.get("X-Donorcast-Token") or request.query.get("token")
            or request.cookies.get(TOKEN_COOKIE))


def token_middleware(token: str) -> Any:
    """aiohttp middleware: 401 unless the request carries the token (constant-time comparison)."""
    from aiohttp import web

    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if request.path in TOKEN_EXEMPT:
            return await handler(request)
        given = supplied_token(request)
        if given is None or not hmac.compare_digest(given.encode(), expected):
            return web.json_response(
                {"error": "dashboard token required: Authorization: Bearer <token>, X-Donorcast-Token, "
                          "or ?token=<token> (DONORCAST_DASHBOARD_TOKEN)"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="donorcast"', **SECURITY_HEADERS},
            )
        response = await handler(request)
        if request.cookies.get(TOKEN_COOKIE) != token and not response.prepared:
            # The page's own requests (EventSource, downloads, assets) then need no token in their URL.
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return require_token
