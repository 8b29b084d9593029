"""The HTTP side of the application: routes, the JSON API, static files, WebSocket upgrades.

:class:`Api` implements :class:`fastchat.web.http.Router`. Each route is one small async
method; authentication, CORS and error mapping are done once here, at the edge.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastchat.auth import normalize_email, validate_login, validate_registration
from fastchat.clock import utc_now_iso
from fastchat.errors import Banned, ChatError, Conflict, InvalidCredentials, RateLimited
from fastchat.ids import new_id
from fastchat.ratelimit import KeyedLimiter
from fastchat.storage import ops
from fastchat.storage.base import AuditRow, Duplicate
from fastchat.web.http import BodySink, Request, Response, error_response, json_response
from fastchat.web.static import StaticFiles
from fastchat.ws.connection import Connection
from fastchat.ws.deflate import (
    ContextDeflater,
    ExtensionHeaderError,
    SharedDeflater,
    negotiate,
    shared_deflater,
)
from fastchat.ws.peer import DEDICATED, PLAIN, SHARED
from fastchat.ws.upgrade import hand_over, raw_request

if TYPE_CHECKING:
    import asyncio

    from fastchat.app import App
    from fastchat.chat import User

log = logging.getLogger("fastchat.api")

_WS_PATHS = ("/", "/ws")

Route = Callable[[Request], Awaitable[Response]]


class Api:
    """Routes requests to handlers; the :class:`fastchat.web.http.Router` of the server."""

    def __init__(self, app: App):
        self._app = app
        self._config = app.config
        self._static = StaticFiles(app.config.server.static_dir)
        self._auth_limiter = KeyedLimiter(app.config.limits.auth_per_minute, 60.0)
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/metrics"): self._metrics,
            ("POST", "/api/auth/register"): self._register,
            ("POST", "/api/auth/login"): self._login,
            ("GET", "/api/auth/me"): self._me,
            ("GET", "/api/chat/rooms"): self._rooms,
            ("GET", "/api/admin/audit"): self._audit,
        }
        self._paths = {path for _, path in self._routes}

    # --- Router ---------------------------------------------------------------------------

    def body_limit(self, request: Request) -> int:
        if request.path == "/api/chat/upload":
            return self._config.uploads.max_bytes
        return self._config.server.max_body_bytes

    def body_sink(self, request: Request) -> BodySink | None:
        if request.method == "POST" and request.path == "/api/chat/upload":
            return self._app.uploads.sink(request)
        return None

    async def handle(self, request: Request, sink: BodySink | None) -> Response:
        self._app.metrics.http_requests += 1
        origin = request.header("origin")
        if request.method == "OPTIONS" and request.path.startswith("/api/"):
            return self._preflight(request, origin)
        try:
            response = await self._dispatch(request, sink)
        except ChatError as err:
            extra: dict[str, object] = {"code": err.code}
            if err.field is not None:
                extra["field"] = err.field
            response = error_response(err.http_status, err.message, **extra)
            if isinstance(err, RateLimited):
                response.headers.append(("Retry-After", str(max(1, round(err.retry_after)))))
        if (
            origin is not None
            and origin in self._config.server.cors_origins
            and request.path.startswith("/api/")
        ):
            response.headers.extend(_cors_headers(origin))
        return response

    async def _dispatch(self, request: Request, sink: BodySink | None) -> Response:
        route = self._routes.get((request.method, request.path))
        if route is not None:
            return await route(request)
        path = request.path
        if path.startswith("/api/chat/files/") and request.method in ("GET", "HEAD"):
            return await self._app.uploads.download(request, path.removeprefix("/api/chat/files/"))
        if path == "/api/chat/upload" and request.method == "POST":
            return await self._app.uploads.upload(request, sink)
        if request.method in ("GET", "HEAD"):
            name = "index.html" if path == "/" else path.removeprefix("/static/").lstrip("/")
            found = self._static.get(name, request)
            if found is not None:
                return found
            if path == "/":
                return self._static.no_client()
        if path in self._paths or path == "/api/chat/upload" or path == "/":
            return error_response(405, "Method not allowed")
        return error_response(404, "Not found")

    def _preflight(self, request: Request, origin: str | None) -> Response:
        if origin is None or origin not in self._config.server.cors_origins:
            return error_response(403, "Origin not allowed")
        headers = [
            *_cors_headers(origin),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Filename"),
            ("Access-Control-Max-Age", "600"),
        ]
        return Response(204, b"", headers)

    def on_upgrade(
        self, request: Request, transport: asyncio.Transport, tail: bytes
    ) -> Response | None:
        if request.path not in _WS_PATHS:
            return error_response(404, "Not found")
        if request.method != "GET":
            return error_response(405, "WebSocket upgrades must use GET")
        origin = request.header("origin")
        allowed = self._config.server.allowed_origins
        if (
            origin is not None
            and not _same_origin(origin, request.header("host"))
            and origin not in allowed
        ):
            return error_response(403, "Origin not allowed")
        mode = self._config.websocket.compression
        try:
            negotiated = negotiate(request.headers.get("sec-websocket-extensions", []), mode)
        except ExtensionHeaderError as exc:
            return error_response(400, f"Malformed Sec-WebSocket-Extensions: {exc}")
        deflater: SharedDeflater | ContextDeflater | None = None
        if negotiated is None:
            compress = PLAIN
        elif negotiated.server_no_context_takeover and negotiated.server_max_window_bits == 15:
            compress = SHARED  # the hub's one compressor serves it
        else:
            compress = DEDICATED
            bits = negotiated.server_max_window_bits
            deflater = (
                shared_deflater(bits)
                if negotiated.server_no_context_takeover
                else ContextDeflater(bits)
            )
        connection = Connection(
            self._app.hub,
            self._app.sessions,
            self._config.websocket,
            self._app.metrics,
            client=sys.intern(request.client),  # one string per address, not per socket
            compress=compress,
            deflater=deflater,
        )
        hand_over(
            transport,
            raw_request(request),
            tail,
            self._config.websocket,
            connection,
            negotiated.response_header if negotiated else None,
        )
        return None

    # --- routes ---------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        writer = self._app.writer
        redis = self._app.redis
        healthy = writer.healthy and (redis is None or redis.connected)
        body = {
            "status": "ok" if healthy else "degraded",
            "storage": "ok" if writer.healthy else writer.last_error,
            "connections": len(self._app.hub.connections),
            "queue_depth": writer.queue_depth,
        }
        if redis is not None:
            body["broker"] = "ok" if redis.connected else redis.last_error
        return json_response(200 if healthy else 503, body)

    async def _metrics(self, request: Request) -> Response:
        return Response(
            200, generate_latest(self._app.registry), [("Content-Type", CONTENT_TYPE_LATEST)]
        )

    def _limit_auth(self, request: Request) -> None:
        retry = self._auth_limiter.hit(request.client, time.monotonic())
        if retry is not None:
            raise RateLimited("Too many attempts, try again later", retry_after=retry)

    async def _register(self, request: Request) -> Response:
        self._limit_auth(request)
        registration = validate_registration(_json_body(request))
        store = self._app.store
        email = normalize_email(registration.email)
        if await store.user_by_name(registration.username) or await store.user_by_login(email):
            raise Conflict("User already exists")
        password_hash = await self._app.hasher.hash(registration.password)
        user_id = new_id()
        op = ops.insert_user(
            id=user_id,
            username=registration.username,
            email=email,
            password_hash=password_hash,
            role="user",
            created_at=utc_now_iso(),
        )
        try:
            await self._app.writer.execute(op)
        except Duplicate:
            raise Conflict("User already exists") from None
        token = self._app.tokens.issue(user_id, registration.username, "user")
        return json_response(
            201,
            {
                "user": {"id": user_id, "username": registration.username, "email": email},
                "token": token,
            },
        )

    async def _login(self, request: Request) -> Response:
        self._limit_auth(request)
        login = validate_login(_json_body(request))
        row = await self._app.store.user_by_login(login.username)
        if (
            not await self._app.hasher.verify(login.password, row.password_hash if row else None)
            or row is None
        ):
            raise InvalidCredentials("Invalid credentials")
        user = await self._app.chat.user(row.id)
        assert user is not None
        if user.is_banned(time.time()):
            raise Banned("This account is banned")
        token = self._app.tokens.issue(user.id, user.username, user.role)
        return json_response(200, {"user": user.private(), "token": token})

    async def _user(self, request: Request) -> User:
        return await self._app.api_user(request)

    async def _me(self, request: Request) -> Response:
        return json_response(200, {"user": (await self._user(request)).private()})

    async def _rooms(self, request: Request) -> Response:
        return json_response(
            200, {"rooms": self._app.chat.visible_rooms(await self._user(request))}
        )

    async def _audit(self, request: Request) -> Response:
        user = await self._user(request)
        if user.role != "admin":
            return error_response(403, "Admins only", code="forbidden")
        entries = await self._app.store.audit_entries(limit=200)
        return json_response(200, {"entries": [_audit_json(e) for e in entries]})


def _json_body(request: Request) -> object:
    try:
        return request.json()
    except orjson.JSONDecodeError:
        from fastchat.errors import ValidationError

        raise ValidationError("Body must be JSON", field="body") from None


def _audit_json(entry: AuditRow) -> dict[str, object]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actorId": entry.actor_id,
        "action": entry.action,
        "targetUserId": entry.target_user_id,
        "roomId": entry.room_id,
        "reason": entry.reason,
        "detail": orjson.loads(entry.detail) if entry.detail else None,
    }


def _cors_headers(origin: str) -> list[tuple[str, str]]:
    return [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]


def _same_origin(origin: str, host: str | None) -> bool:
    return host is not None and origin.split("://", 1)[-1] == host
