"""Passwords, tokens and the validation of auth requests.

bcrypt runs on a small dedicated thread pool so a login never stalls the event loop;
tokens are HS256 JWTs with the seed's claim names (``userId``, ``username``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import jwt

from fastchat.errors import AuthRequired, InvalidToken, ValidationError
from fastchat.names import is_reserved, unsafe_character
from fastchat.roles import ROLES

log = logging.getLogger(__name__)

BCRYPT_MAX_BYTES = 72
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 4096

_USERNAME_RE = re.compile(r"[A-Za-z0-9_.\-]{3,32}")
_EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@.\s\x00-\x1f\x7f]+(?:\.[^@.\s\x00-\x1f\x7f]+)+")
_MAX_EMAIL_CHARS = 254
_MIN_PASSWORD_CHARS = 8
_SECRET_FILE = "jwt_secret"


class PasswordHasher:
    """bcrypt hashing and checking on a dedicated thread pool, never on the event loop."""

    def __init__(self, rounds: int, threads: int) -> None:
        self._rounds = rounds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        # Checked against when the user is unknown, so that path costs as much as a real one.
        self._dummy = self._pool.submit(
            bcrypt.hashpw, secrets.token_bytes(16), bcrypt.gensalt(rounds)
        )

    async def hash(self, password: str) -> str:
        """Hash ``password``; more than 72 bytes of UTF-8 → :class:`ValidationError`."""
        encoded = _password_bytes(password)
        if encoded is None:
            raise ValidationError(
                f"Password must be text of at most {BCRYPT_MAX_BYTES} bytes", field="password"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _hash_sync, encoded, self._rounds)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True if ``password`` matches ``hashed``; ``None`` (unknown user) costs a check too."""
        encoded = _password_bytes(password)
        if encoded is None:
            return False
        loop = asyncio.get_running_loop()
        if hashed is None:
            await loop.run_in_executor(self._pool, self._check_unknown, encoded)
            return False
        return await loop.run_in_executor(self._pool, _check_sync, encoded, hashed.encode())

    def _check_unknown(self, password: bytes) -> None:
        # Runs on the pool: the dummy hash was the pool's first job, so it is done or running.
        _check_sync(password, self._dummy.result())

    def close(self) -> None:
        """Stop the pool; queued (not yet started) checks are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _password_bytes(password: str) -> bytes | None:
    """UTF-8 bytes of ``password``, or None when bcrypt cannot take it."""
    try:
        encoded = password.encode()
    except UnicodeEncodeError:
        return None
    return encoded if len(encoded) <= BCRYPT_MAX_BYTES else None


def _hash_sync(password: bytes, rounds: int) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds)).decode()


def _check_sync(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        # The password was length-checked already, so this is a corrupt stored hash.
        log.warning("stored password hash is not a valid bcrypt hash")
        return False


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says. Times are Unix seconds."""

    user_id: str
    username: str
    role: str
    issued_at: int
    expires_at: int
    session_id: str | None = None


class TokenService:
    """Issues and verifies HS256 access tokens (JWTs), each naming its login session."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._ttl = ttl_seconds

    @property
    def ttl_seconds(self) -> int:
        """How long an access token is valid."""
        return self._ttl

    def issue(self, user_id: str, username: str, role: str, session_id: str | None = None) -> str:
        """A signed token for this user (and login session), valid for the configured TTL."""
        now = int(time.time())
        claims: dict[str, object] = {
            "userId": user_id,
            "username": username,
            "role": role,
            "iat": now,
            "exp": now + self._ttl,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: object) -> Claims:
        """The claims of a valid token; anything else → :class:`InvalidToken`."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("Malformed token")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["exp", "iat", "userId"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("Token expired") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("Bad token signature") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("Malformed token") from None
        user_id = payload["userId"]
        username = payload.get("username", "")
        role = payload.get("role", "user")
        session_id = payload.get("sid")
        if (
            not isinstance(user_id, str)
            or not user_id
            or not isinstance(username, str)
            or role not in ROLES
            or not (session_id is None or isinstance(session_id, str))
        ):
            raise InvalidToken("Malformed token")
        return Claims(user_id, username, role, int(payload["iat"]), int(payload["exp"]), session_id)


def new_refresh_token() -> str:
    """A fresh refresh token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    """The form a refresh token is stored and looked up in (SHA-256, hex): a leaked
    database holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def resolve_jwt_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, else the one in ``data_dir/jwt_secret`` (made on first run)."""
    if configured:
        return configured
    path = data_dir / _SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create_secret_file(path, secrets.token_urlsafe(48))
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: JWT secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _create_secret_file(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` (mode 0600) unless another process got there first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        # link() never replaces, and readers never see a half-written file.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated ``POST /api/auth/register`` body; ``email`` is normalized."""

    username: str
    email: str
    password: str


@dataclass(frozen=True, slots=True)
class Login:
    """A ``POST /api/auth/login`` body; ``username`` may be a username or an email."""

    username: str
    password: str


def validate_registration(body: object) -> Registration:
    """Check a registration body; the first problem → ``ValidationError(field=...)``."""
    fields = _object(body)
    username = _string(fields, "username")
    email = _string(fields, "email")
    password = _string(fields, "password")
    if not _USERNAME_RE.fullmatch(username):
        raise ValidationError(
            "Username must be 3-32 characters: letters, digits, '_', '-' or '.'",
            field="username",
        )
    if is_reserved(username):
        raise ValidationError("This username is reserved", field="username")
    if (
        len(email) > _MAX_EMAIL_CHARS
        or not _EMAIL_RE.fullmatch(email)
        or unsafe_character(email) is not None
    ):
        raise ValidationError("Email address is not valid", field="email")
    _check_password(password, "password")
    return Registration(username, normalize_email(email), password)


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """A ``POST /api/auth/password`` body; ``new_password`` passed the password rules."""

    old_password: str
    new_password: str


def validate_password_change(body: object) -> PasswordChange:
    """Check a password change body; the first problem → ``ValidationError(field=...)``."""
    fields = _object(body)
    old = _string(fields, "oldPassword")
    new = _string(fields, "newPassword")
    _check_password(new, "newPassword")
    return PasswordChange(old, new)


def _check_password(password: str, field: str) -> None:
    if len(password) < _MIN_PASSWORD_CHARS:
        raise ValidationError(
            f"Password must be at least {_MIN_PASSWORD_CHARS} characters", field=field
        )
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise ValidationError(f"Password must be at most {BCRYPT_MAX_BYTES} bytes", field=field)


def validate_login(body: object) -> Login:
    """Check a login body's shape only: wrong lengths are just invalid credentials."""
    fields = _object(body)
    return Login(_string(fields, "username"), _string(fields, "password"))


def normalize_email(email: str) -> str:
    """The form emails are stored and looked up in."""
    return email.lower()


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer TOKEN`` header, else :class:`AuthRequired`."""
    scheme, _, token = (authorization_header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthRequired("Authentication required")
    return token


def _object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise ValidationError("Request body must be a JSON object")
    return body


def _string(fields: dict[str, object], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' is required and must be a string", field=name)
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError(f"'{name}' is not valid UTF-8 text", field=name) from None
    return value
