"""Configuration: read once from ``config.toml`` (and the environment) into frozen objects.

This module is the only reader of the configuration file and of environment variables.
Every other module receives the typed :class:`Config` (or one of its sections) as an
argument. Unknown keys and values of the wrong type stop start-up with a
:class:`ConfigError` that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Compression = Literal["off", "shared", "dedicated"]
Synchronous = Literal["full", "normal"]
BrokerKind = Literal["local", "redis"]
Backend = Literal["sqlite", "postgres"]

PACKAGED_CLIENT = Path(__file__).resolve().parent / "static"
"""The browser client shipped inside the package: the default ``server.static_dir``."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 3000
    static_dir: Path = PACKAGED_CLIENT
    cors_origins: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 16 * 1024
    header_timeout_seconds: float = 10.0
    request_timeout_seconds: float = 300.0
    min_body_bytes_per_second: int = 1024
    send_timeout_seconds: float = 30.0
    max_http_connections_per_ip: int = 256
    trusted_proxies: tuple[str, ...] = ()
    keepalive_timeout_seconds: float = 30.0
    shutdown_timeout_seconds: float = 10.0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    compression: Compression = "shared"
    compression_threshold: int = 256
    max_message_bytes: int = 64 * 1024
    max_fragments: int = 64
    max_backpressure_bytes: int = 1024 * 1024
    backpressure_soft_bytes: int = 256 * 1024
    ping_interval_seconds: float = 30.0
    ping_timeout_seconds: float = 20.0
    read_buffer_bytes: int = 2048
    coalesce_ms: float = 2.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = Path("data/fastchat.db")
    uploads_dir: Path = Path("data/uploads")
    synchronous: Synchronous = "full"
    batch_max: int = 1000
    flush_interval_ms: int = 2
    queue_max: int = 100_000
    history_cache: int = 500
    history_cache_total: int = 20_000
    backend: Backend = "sqlite"
    dsn: str = "postgresql://fastchat@127.0.0.1:5432/fastchat"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    jwt_secret: str = ""
    token_ttl_seconds: int = 15 * 60
    refresh_ttl_seconds: int = 30 * 24 * 3600
    bcrypt_rounds: int = 12
    bcrypt_threads: int = 2


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    messages_per_second: float = 20.0
    burst: int = 40
    flood_strikes: int = 20
    typing_per_second: float = 2.0
    auth_timeout_seconds: float = 10.0
    auth_per_minute: int = 30
    max_connections_per_ip: int = 1000
    max_connections_per_user: int = 20
    read_receipts_max_members: int = 50


@dataclass(frozen=True, slots=True)
class UploadsConfig:
    max_bytes: int = 10 * 1024 * 1024
    per_user_per_hour: int = 60
    total_max_bytes: int = 10 * 1024**3
    per_user_max_bytes: int = 1024**3
    min_free_bytes: int = 512 * 1024**2


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    kind: BrokerKind = "local"
    url: str = "redis://127.0.0.1:6379/0"
    stream_max: int = 10_000
    timeout_seconds: float = 2.0
    heartbeat_seconds: float = 1.0
    node_timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, one frozen section per TOML table."""

    server: ServerConfig = field(default_factory=ServerConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    source: Path | None = None

    @property
    def data_dir(self) -> Path:
        """The folder of the SQLite file: also home of the generated JWT secret."""
        return self.storage.path.parent


_SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "websocket": WebSocketConfig,
    "storage": StorageConfig,
    "auth": AuthConfig,
    "limits": LimitsConfig,
    "uploads": UploadsConfig,
    "log": LogConfig,
    "broker": BrokerConfig,
}

_ZERO_ALLOWED = {
    ("server", "port"),
    ("storage", "flush_interval_ms"),
    ("websocket", "coalesce_ms"),
}
_ENV_OVERRIDES = {"FASTCHAT_JWT_SECRET": ("auth", "jwt_secret")}


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (a TOML file) and the environment into a :class:`Config`.

    ``path=None`` gives the defaults. Relative paths in the file are taken relative to
    the file's folder, so ``fastchat run -c elsewhere/config.toml`` works from anywhere.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base = Path.cwd()
    source: Path | None = None
    if path is not None:
        source = Path(path)
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        base = source.resolve().parent
    where = str(source) if source else "<defaults>"

    for name, value in env.items():
        if name in _ENV_OVERRIDES and value:
            section, key = _ENV_OVERRIDES[name]
            raw.setdefault(section, {})[key] = value

    sections: dict[str, Any] = {}
    for section_name, section_raw in raw.items():
        if section_name not in _SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section_name}]")
        if not isinstance(section_raw, dict):
            raise ConfigError(f"{where}: [{section_name}] must be a table")
        sections[section_name] = _build_section(
            section_name, _SECTIONS[section_name], section_raw, where, base
        )
    for section_name, cls in _SECTIONS.items():
        if section_name not in sections:
            sections[section_name] = _build_section(section_name, cls, {}, where, base)
    config = Config(**sections, source=source)
    _check(config, where)
    return config


def _build_section(section: str, cls: type, raw: dict[str, Any], where: str, base: Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key '{key}' in [{section}]")
        values[key] = _coerce(f"{section}.{key}", hints[key], value, where)
    for f in dataclasses.fields(cls):
        value = values.get(f.name, f.default)
        if isinstance(value, Path) and not value.is_absolute():
            values[f.name] = base / value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if (section, f.name) in _ZERO_ALLOWED:
                if value < 0:
                    raise ConfigError(f"{where}: '{section}.{f.name}' must not be negative")
            elif value <= 0:
                raise ConfigError(f"{where}: '{section}.{f.name}' must be greater than 0")
    return cls(**values)


def _coerce(key: str, hint: Any, value: Any, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: '{key}' must be {expected}, got {value!r}")

    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise bad("a path string")
        return Path(value)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise bad("one of " + ", ".join(repr(c) for c in choices))
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    if isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint):
        # An optional key: TOML has no null, so a value given is always the other type.
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _coerce(key, inner, value, where)
    raise AssertionError(f"unsupported config type {hint!r} for {key}")


def _check(config: Config, where: str) -> None:
    if not 0 <= config.server.port <= 65535:
        raise ConfigError(f"{where}: 'server.port' must be between 0 and 65535")
    for entry in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where}: 'server.trusted_proxies' entry {entry!r} is not an address or network"
            ) from None
    if not 4 <= config.auth.bcrypt_rounds <= 31:
        raise ConfigError(f"{where}: 'auth.bcrypt_rounds' must be between 4 and 31")
    if config.websocket.backpressure_soft_bytes > config.websocket.max_backpressure_bytes:
        raise ConfigError(
            f"{where}: 'websocket.backpressure_soft_bytes' must not exceed max_backpressure_bytes"
        )
    if config.auth.jwt_secret and len(config.auth.jwt_secret.encode()) < 32:
        raise ConfigError(
            f"{where}: 'auth.jwt_secret' (or FASTCHAT_JWT_SECRET) must be at least 32 bytes"
        )
    if config.websocket.ping_timeout_seconds > config.websocket.ping_interval_seconds:
        raise ConfigError(
            f"{where}: 'websocket.ping_timeout_seconds' must not exceed ping_interval_seconds"
        )
    if (config.server.tls_cert_file is None) != (config.server.tls_key_file is None):
        raise ConfigError(
            f"{where}: 'server.tls_cert_file' and 'server.tls_key_file' must be set together"
        )
    if config.broker.kind == "redis" and not config.broker.url.startswith("redis://"):
        raise ConfigError(f"{where}: 'broker.url' must be a redis://[:password@]host:port/db URL")
    if config.broker.node_timeout_seconds <= config.broker.heartbeat_seconds:
        raise ConfigError(
            f"{where}: 'broker.node_timeout_seconds' must exceed broker.heartbeat_seconds"
        )
    if config.storage.backend == "postgres" and not config.storage.dsn.startswith(
        ("postgresql://", "postgres://")
    ):
        raise ConfigError(
            f"{where}: 'storage.dsn' must be a postgresql:// URL, got {config.storage.dsn!r}"
        )
    if config.log.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{where}: 'log.level' must be debug, info, warning or error")
