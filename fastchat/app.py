"""The application object: every service built once from the config and wired together."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fastchat.auth import PasswordHasher, TokenService, bearer_token, resolve_jwt_secret
from fastchat.chat import Chat, User
from fastchat.fanout.broker import Broker, LocalBroker
from fastchat.fanout.hub import Hub
from fastchat.logins import LoginSessions
from fastchat.metrics import Metrics, MetricsCollector, registry_for
from fastchat.session import Sessions
from fastchat.storage import ops
from fastchat.storage.backends import make_store, make_writer
from fastchat.web.uploads import Uploads

if TYPE_CHECKING:
    from fastchat.auth import Claims
    from fastchat.config import Config
    from fastchat.fanout.redis_broker import RedisBroker
    from fastchat.web.http import Request

_CHANGE_LOG_DAYS = 1
"""Account change log entries older than this are dropped at start (servers poll it live)."""


class App:
    """Holds the services; built inside the running event loop by :mod:`fastchat.server`."""

    def __init__(self, config: Config):
        self.config = config
        self.metrics = Metrics()
        self.store = make_store(config.storage)
        startup = self.store.open()
        self.writer = make_writer(config.storage, asyncio.get_running_loop())
        self.writer.start()
        self.tokens = TokenService(
            resolve_jwt_secret(config.auth.jwt_secret, config.data_dir),
            config.auth.token_ttl_seconds,
        )
        self.hasher = PasswordHasher(config.auth.bcrypt_rounds, config.auth.bcrypt_threads)
        self.hub = Hub(config.websocket, self.metrics)
        self.redis: RedisBroker | None = None
        self.broker: Broker = (
            LocalBroker(self.hub) if config.broker.kind == "local" else self._redis_broker()
        )
        self.chat = Chat(
            config.storage,
            self.hub,
            self.broker,
            self.store,
            self.writer,
            self.tokens,
            self.metrics,
            startup,
            config.limits.read_receipts_max_members,
        )
        if self.redis is not None:
            self.redis.remote_entry = self.chat.apply_remote
            self.redis.presence = self.chat.presence_elsewhere
        self.sessions = Sessions(
            self.chat, self.hub, config.limits, self.metrics, cluster=self.redis
        )
        self.sessions.start()
        self.writer.submit(ops.prune_user_changes(time.time() - _CHANGE_LOG_DAYS * 86400))
        for user_id, username, email in self.store.users_without_keys():
            self.writer.submit(ops.set_user_keys(user_id, username, email))
        self.logins = LoginSessions(
            self.store, self.writer, self.tokens, config.auth.refresh_ttl_seconds
        )
        if self.redis is not None:
            self.redis.control = self.sessions.on_control
        self.uploads = Uploads(
            config.storage.uploads_dir,
            config.uploads,
            self.tokens,
            self.api_user,
            self.store,
            self.writer,
            self.chat,
        )
        self.registry = registry_for(
            MetricsCollector(
                self.metrics,
                self.writer,
                {
                    "open_connections": lambda: len(self.hub.connections),
                    "online_users": lambda: len(self.hub.users),
                    "rooms": lambda: len(self.hub.rooms),
                    "asyncio_tasks": lambda: len(asyncio.all_tasks()),
                    "store_queue_max": lambda: config.storage.queue_max,
                },
            )
        )

    def _redis_broker(self) -> RedisBroker:
        try:
            from fastchat.fanout.redis_broker import RedisBroker
        except ImportError as exc:
            raise ValueError(
                f"broker.kind = \"redis\" needs pip install 'fastchat[cluster]' ({exc})"
            ) from None
        storage = self.config.storage
        # seqs skip this many when Redis lost its data, as they do after an unclean stop
        self.redis = RedisBroker(
            self.hub, self.config.broker, storage.queue_max + storage.batch_max
        )
        self.hub.watcher = self.redis
        return self.redis

    async def start(self) -> None:
        """Connect what lives outside the process (Redis, with ``broker.kind = "redis"``)."""
        if self.redis is not None:
            await self.redis.start()

    async def api_user(self, request: Request) -> User:
        """The account behind a request's ``Authorization: Bearer`` token.

        Tokens are accepted only there (and in the WebSocket ``authenticate`` message), never
        in a URL, where they would end up in logs, history and Referer headers.
        """
        return (await self.api_claims(request))[0]

    async def api_claims(self, request: Request) -> tuple[User, Claims]:
        """:meth:`api_user` and the claims of its token (which name its login session)."""
        return await self.chat.users.verify(bearer_token(request.header("authorization")))

    async def close(self, timeout: float) -> int:
        """Flush the write-behind queue and close the database; returns ops not written."""
        self.sessions.stop()
        if self.redis is not None:
            await self.redis.close()
        lost = await self.writer.close(timeout)
        if lost == 0:
            self.store.mark_clean_shutdown()
        self.store.close()
        self.hasher.close()
        return lost
