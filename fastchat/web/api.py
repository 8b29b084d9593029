"""The HTTP side of the application: routes, the JSON API, static files, WebSocket upgrades.

:class:`Api` implements :class:`fastchat.web.http.Router`. Each route is one small async
method; authentication, CORS and error mapping are done once here, at the edge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastchat import protocol as p
from fastchat.auth import (
    normalize_email,
    validate_login,
    validate_password_change,
    validate_registration,
)
from fastchat.clock import utc_now_iso
from fastchat.errors import (
    Banned,
    ChatError,
    CloseCode,
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidToken,
    RateLimited,
    ValidationError,
)
from fastchat.ids import new_id
from fastchat.names import skeleton
from fastchat.protocol import parse_search
from fastchat.ratelimit import KeyedLimiter
from fastchat.storage import ops
from fastchat.storage.base import FOREVER, AuditRow, Duplicate, UserRow
from fastchat.web.http import BodySink, Request, Response, error_response, json_response
from fastchat.web.static import StaticFiles
from fastchat.ws.upgrade import accept

if TYPE_CHECKING:
    import asyncio

    from fastchat.app import App
    from fastchat.chat import User

log = logging.getLogger("fastchat.api")

_WS_PATHS = ("/", "/ws")
_USERS_PAGE_MAX = 500

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
            ("POST", "/api/auth/refresh"): self._refresh,
            ("POST", "/api/auth/logout"): self._logout,
            ("POST", "/api/auth/logout-all"): self._logout_all,
            ("POST", "/api/auth/password"): self._password,
            ("GET", "/api/auth/me"): self._me,
            ("DELETE", "/api/auth/me"): self._delete_me,
            ("GET", "/api/auth/me/export"): self._export_me,
            ("GET", "/api/chat/rooms"): self._rooms,
            ("GET", "/api/chat/search"): self._search,
            ("GET", "/api/admin/audit"): self._audit,
            ("GET", "/api/admin/users"): self._admin_users,
            ("POST", "/api/admin/users/role"): self._admin_role,
            ("POST", "/api/admin/users/ban"): self._admin_ban,
            ("POST", "/api/admin/users/unban"): self._admin_unban,
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
            ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
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
        return accept(
            request,
            transport,
            tail,
            registry=self._app.hub,
            handler=self._app.sessions,
            config=self._config.websocket,
            metrics=self._app.metrics,
        )

    # --- routes ---------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        writer = self._app.writer
        read_error = self._app.store.recent_read_error()
        redis = self._app.redis
        healthy = writer.healthy and read_error is None and (redis is None or redis.connected)
        if not writer.healthy:
            storage = writer.last_error
        else:
            storage = "ok" if read_error is None else f"read failed: {read_error}"
        body = {
            "status": "ok" if healthy else "degraded",
            "storage": storage,
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
        if await store.user_like(skeleton(registration.username), skeleton(email)):
            raise Conflict("A user with a username or email that looks the same exists")
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
        user = await self._app.chat.user(user_id)
        assert user is not None
        grant = await self._app.logins.open(user)
        return json_response(
            201,
            {
                "user": {"id": user_id, "username": registration.username, "email": email},
                **grant.json(),
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
        user = await self._app.chat.users.reload(row.id)
        if user is None:
            raise InvalidCredentials("Invalid credentials")
        if user.is_banned(time.time()):
            raise Banned("This account is banned")
        grant = await self._app.logins.open(user)
        return json_response(200, {"user": user.private(), **grant.json()})

    async def _refresh(self, request: Request) -> Response:
        body = _json_body(request)
        token = body.get("refreshToken") if isinstance(body, dict) else None
        grant = await self._app.logins.refresh(token, self._signed_in_user)
        return json_response(200, grant.json())

    async def _signed_in_user(self, user_id: str) -> User:
        """The account a refresh token belongs to, if it may still sign in."""
        user = await self._app.chat.users.reload(user_id)
        if user is None:
            raise InvalidToken("User not found", field="refreshToken")
        if user.is_banned(time.time()):
            raise Banned("This account is banned")
        return user

    async def _logout(self, request: Request) -> Response:
        user, claims = await self._app.api_claims(request)
        if claims.session_id is not None:
            await self._app.logins.revoke(claims.session_id)
        await self._app.sessions.recheck(user.id)
        return json_response(200, {"ok": True})

    async def _logout_all(self, request: Request) -> Response:
        user = await self._user(request)
        await self._app.logins.revoke_all(user.id)
        await self._app.sessions.recheck(user.id)
        return json_response(200, {"ok": True})

    async def _password(self, request: Request) -> Response:
        self._limit_auth(request)
        user, claims = await self._app.api_claims(request)
        change = validate_password_change(_json_body(request))
        row = await self._app.store.user_by_id(user.id)
        if row is None or not await self._app.hasher.verify(change.old_password, row.password_hash):
            raise InvalidCredentials("The current password is not right", field="oldPassword")
        password_hash = await self._app.hasher.hash(change.new_password)
        writer = self._app.writer
        writer.submit(ops.set_password(user.id, password_hash))
        await writer.execute(ops.revoke_user_sessions(user.id, utc_now_iso(), claims.session_id))
        await self._app.sessions.recheck(user.id)
        return json_response(200, {"ok": True})

    async def _user(self, request: Request) -> User:
        return await self._app.api_user(request)

    async def _me(self, request: Request) -> Response:
        return json_response(200, {"user": (await self._user(request)).private()})

    async def _delete_me(self, request: Request) -> Response:
        self._limit_auth(request)
        user = await self._user(request)
        body = _json_body(request)
        fields = body if isinstance(body, dict) else {}
        password, keep = fields.get("password"), fields.get("keepMessages", True)
        if not isinstance(password, str):
            raise ValidationError("'password' is required and must be a string", field="password")
        if not isinstance(keep, bool):
            raise ValidationError("'keepMessages' must be true or false", field="keepMessages")
        row = await self._app.store.user_by_id(user.id)
        if row is None or not await self._app.hasher.verify(password, row.password_hash):
            raise InvalidCredentials("The password is not right", field="password")
        if user.role == "admin" and await self._app.store.admin_count() <= 1:
            raise Conflict("The last admin cannot delete their account")
        await self._app.chat.accounts.remove(user, keep)
        await self._app.sessions.recheck(user.id)
        return json_response(200, {"ok": True, "keptMessages": keep})

    async def _export_me(self, request: Request) -> Response:
        user = await self._user(request)
        return json_response(200, await self._app.chat.accounts.export(user))

    async def _rooms(self, request: Request) -> Response:
        return json_response(
            200, {"rooms": self._app.chat.visible_rooms(await self._user(request))}
        )

    async def _search(self, request: Request) -> Response:
        user = await self._user(request)
        limit = request.query("limit")
        if limit and limit.isascii() and limit.isdigit() and len(limit) < 10:
            limit = int(limit)
        cmd = parse_search(
            {
                "query": request.query("q"),
                "roomId": request.query("roomId"),
                "limit": limit,
                "before": request.query("before"),
            }
        )
        return json_response(200, await self._app.chat.search.results(user, cmd))

    async def _admin(self, request: Request) -> User:
        user = await self._user(request)
        if user.role != "admin":
            raise Forbidden("Admins only")
        return user

    async def _audit(self, request: Request) -> Response:
        await self._admin(request)
        entries = await self._app.store.audit_entries(limit=200)
        return json_response(200, {"entries": [_audit_json(e) for e in entries]})

    async def _admin_users(self, request: Request) -> Response:
        await self._admin(request)
        limit = request.query("limit") or "100"
        if not limit.isdigit() or not 1 <= int(limit[:4]) <= _USERS_PAGE_MAX:
            raise ValidationError(f"limit must be 1-{_USERS_PAGE_MAX}", field="limit")
        rows = await self._app.store.users_page(limit=int(limit), after=request.query("after"))
        return json_response(200, {"users": [_user_json(row) for row in rows]})

    async def _admin_role(self, request: Request) -> Response:
        admin = await self._admin(request)
        cmd = p.parse_fields("set_role", _json_body(request))
        assert isinstance(cmd, p.SetRole)
        await self._app.chat.moderation.change_role(admin, cmd)
        return json_response(200, {"userId": cmd.user_id, "role": cmd.role})

    async def _admin_ban(self, request: Request) -> Response:
        admin = await self._admin(request)
        cmd = p.parse_fields("ban_user", _json_body(request))
        assert isinstance(cmd, p.BanUser)
        for conn in await self._app.chat.moderation.ban(admin, cmd):
            conn.close(CloseCode.BANNED, "banned")
        return json_response(200, {"userId": cmd.user_id, "banned": True})

    async def _admin_unban(self, request: Request) -> Response:
        admin = await self._admin(request)
        cmd = p.parse_fields("unban_user", _json_body(request))
        assert isinstance(cmd, p.UnbanUser)
        await self._app.chat.moderation.unban(admin, cmd)
        return json_response(200, {"userId": cmd.user_id, "banned": False})


def _json_body(request: Request) -> object:
    try:
        return request.json()
    except orjson.JSONDecodeError:
        raise ValidationError("Body must be JSON", field="body") from None


def _user_json(row: UserRow) -> dict[str, object]:
    banned = row.banned_until is not None and row.banned_until > time.time()
    return {
        "id": row.id,
        "username": row.username,
        "email": row.email,
        "role": row.role,
        "createdAt": row.created_at,
        "lastSeen": row.last_seen,
        "banned": banned,
        "bannedUntil": None if not banned or row.banned_until == FOREVER else row.banned_until,
    }


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
