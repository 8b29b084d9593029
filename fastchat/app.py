"""The application object: every service built once from the config and wired together."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastchat.auth import PasswordHasher, TokenService, bearer_token, resolve_jwt_secret
from fastchat.chat import Chat, User
from fastchat.fanout.broker import LocalBroker
from fastchat.fanout.hub import Hub
from fastchat.metrics import Metrics, MetricsCollector, registry_for
from fastchat.session import Sessions
from fastchat.storage.backends import make_store, make_writer
from fastchat.web.uploads import Uploads

if TYPE_CHECKING:
    from fastchat.config import Config
    from fastchat.web.http import Request


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
        self.broker = LocalBroker(self.hub)
        self.chat = Chat(
            config.storage,
            self.hub,
            self.broker,
            self.store,
            self.writer,
            self.tokens,
            self.metrics,
            startup,
        )
        self.sessions = Sessions(self.chat, self.hub, config.limits, self.metrics)
        self.uploads = Uploads(
            config.storage.uploads_dir,
            config.uploads.per_user_per_hour,
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

    async def api_user(self, request: Request) -> User:
        """The account behind a request's ``Authorization: Bearer`` token.

        Tokens are accepted only there (and in the WebSocket ``authenticate`` message), never
        in a URL, where they would end up in logs, history and Referer headers.
        """
        return await self.chat.identify(bearer_token(request.header("authorization")))

    async def close(self, timeout: float) -> int:
        """Flush the write-behind queue and close the database; returns ops not written."""
        lost = await self.writer.close(timeout)
        if lost == 0:
            self.store.mark_clean_shutdown()
        self.store.close()
        self.hasher.close()
        return lost
