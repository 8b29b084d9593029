"""One exception tree for everything a client can get wrong or be refused.

Each error knows the stable machine-readable ``code`` sent in WebSocket ``error`` events,
the HTTP status it maps to, and (for errors that end a connection) the close code.
"""

from __future__ import annotations

from enum import IntEnum


class ChatError(Exception):
    """A request that cannot be served. ``str(err)`` is the human-readable message."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, request_type: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.request_type = request_type
        self.field = field


class InvalidJson(ChatError):
    code = "invalid_json"


class UnknownType(ChatError):
    code = "unknown_type"


class ValidationError(ChatError):
    code = "validation"


class InvalidQuery(ChatError):
    code = "invalid_query"


class AuthRequired(ChatError):
    code = "auth_required"
    http_status = 401


class InvalidToken(ChatError):
    code = "invalid_token"
    http_status = 401


class InvalidCredentials(ChatError):
    code = "invalid_credentials"
    http_status = 401


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403


class Banned(ChatError):
    code = "banned"
    http_status = 403


class NotFound(ChatError):
    code = "not_found"
    http_status = 404


class NotMember(ChatError):
    code = "not_member"
    http_status = 403


class Conflict(ChatError):
    code = "conflict"
    http_status = 409


class Muted(ChatError):
    code = "muted"
    http_status = 403


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, request_type: str | None = None):
        super().__init__(message, request_type=request_type)
        self.retry_after = retry_after


class Overloaded(ChatError):
    code = "overloaded"
    http_status = 503


class StorageUnavailable(ChatError):
    code = "storage_unavailable"
    http_status = 503


class InsufficientStorage(ChatError):
    code = "insufficient_storage"
    http_status = 507


class Unavailable(ChatError):
    """The message broker (Redis) cannot be reached: resend later with the same clientId."""

    code = "unavailable"
    http_status = 503


class CloseCode(IntEnum):
    """WebSocket close codes fastchat sends (RFC 6455 section 7.4.1 plus the private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_TEXT = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013
    AUTH_TIMEOUT = 4001
    AUTH_ENDED = 4001  # the token expired, its session was revoked or the account removed
    BANNED = 4003
