"""The chat as the session layer sees it: one handler per client event, and the lifecycle.

:class:`Chat` builds the concerns (users, rooms, history, typing, messages, direct
messages, acks, moderation) over the hub, the broker and the store, and exposes their
handlers. Nothing here touches a socket: replies go through the
:class:`~fastchat.fanout.hub.Hub` (which queues bytes), room and user events through the
:class:`~fastchat.fanout.broker.Broker`, writes through a
:class:`~fastchat.storage.base.Writer`. Every state change is applied in memory first and
acknowledged to the sender only once its batch has committed.

A handler returns None when it is done, or an awaitable when it has to read storage (see
:mod:`fastchat.session` for how a connection's later messages wait for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from fastchat import protocol as p
from fastchat.chat.accounts import Accounts
from fastchat.chat.acks import Acks
from fastchat.chat.attachments import Attachments
from fastchat.chat.direct import Direct
from fastchat.chat.history import History
from fastchat.chat.messages import Messages
from fastchat.chat.moderation import Moderation
from fastchat.chat.peers import DmPeers
from fastchat.chat.reactions import Reactions
from fastchat.chat.reads import Reads
from fastchat.chat.rooms import Room, RoomDirectory, Rooms
from fastchat.chat.search import Search
from fastchat.chat.threads import Threads
from fastchat.chat.typing import Typing
from fastchat.chat.users import User, Users
from fastchat.chat.writes import Writes
from fastchat.clock import utc_now_iso
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.auth import TokenService
    from fastchat.config import StorageConfig
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.fanout.hub import Room as Channel
    from fastchat.metrics import Metrics
    from fastchat.storage.base import FileRow, StartupState, Store, Writer
    from fastchat.ws.peer import Peer as Connection

Handler = Callable[["Connection", User, Any], "Awaitable[Any] | None"]


class Chat:
    """Rooms, messages, presence, direct messages and moderation."""

    def __init__(
        self,
        config: StorageConfig,
        hub: Hub,
        broker: Broker,
        store: Store,
        writer: Writer,
        tokens: TokenService,
        metrics: Metrics,
        startup: StartupState,
        read_receipts_max_members: int,
    ):
        self._hub = hub
        self._broker = broker
        self._announcing: set[asyncio.Task[None]] = set()  # presence from other nodes
        self._peers = DmPeers()
        self.users = Users(store, tokens)
        self.directory = RoomDirectory()
        writes = self._writes = Writes(writer, config.queue_max)
        self.history = History(
            self.directory,
            hub,
            store,
            self.users,
            config.history_cache,
            config.history_cache_total,
        )
        typing = Typing(self.directory, hub, broker)
        acks = Acks(hub, metrics, store.client_keys())
        self.rooms = Rooms(
            self.directory,
            hub,
            broker,
            self.users,
            writes,
            self.history,
            typing,
            config.history_cache,
            store,
            self._peers,
        )
        self.moderation = Moderation(
            self.directory, self.rooms, hub, broker, self.users, writes, store
        )
        threads = Threads(hub, broker, store, self.history, writes)
        self.attachments = Attachments(self.directory, store, self.history)
        self.messages = Messages(
            self.directory,
            broker,
            store,
            self.users,
            writes,
            self.history,
            acks,
            typing,
            self.moderation,
            threads,
            self.attachments,
            metrics,
        )
        direct = Direct(hub, broker, store, self.users, writes, acks, self.attachments)
        self.accounts = Accounts(self.directory, store, writes)
        self.reads = Reads(
            self.directory,
            hub,
            broker,
            store,
            self.users,
            writes,
            self.history,
            direct,
            read_receipts_max_members,
        )
        self.search = Search(self.directory, hub, store, self.history, direct)
        reactions = Reactions(broker, self.history, direct, writes)
        self._direct = direct
        self.handlers: dict[type, Handler] = {
            p.JoinRoom: self._join_room,
            p.LeaveRoom: self.rooms.leave_room,
            p.SendMessage: self.messages.send_message,
            p.EditMessage: self._edit_message,
            p.DeleteMessage: self._delete_message,
            p.GetRoomHistory: self.history.room_history,
            p.Typing: typing.typing,
            p.PrivateMessage: self._private_message,
            p.GetPrivateHistory: self._private_history,
            p.CreateRoom: self.rooms.create_room,
            p.InviteToRoom: self.rooms.invite_to_room,
            p.KickUser: self.moderation.kick_user,
            p.MuteUser: self.moderation.mute_user,
            p.UnbanUser: self.moderation.unban_user,
            p.SetRole: self.moderation.set_role,
            p.MarkRead: self.reads.mark_read,
            p.Reaction: reactions.react,
            p.GetThread: threads.get_thread,
            p.Search: self.search.search,
        }
        """The handler of each authenticated command but ``ban_user`` (the session closes
        the banned connections) and ``ping``."""
        # After an unclean stop, messages may have been handed a seq and broadcast without
        # being stored; at most queue_max + batch_max of them. Skip past that many.
        gap = 0 if startup.clean else config.queue_max + config.batch_max
        broker.open_direct(startup.max_dm_seq + gap)
        for row in store.all_rooms():
            self.directory.by_id[row.id] = Room(
                row.id,
                row.name,
                row.description,
                bool(row.is_private),
                row.created_by,
                store.room_member_ids(row.id),
                broker.open_room(row.id, startup.max_room_seq.get(row.id, 0) + gap),
            )

    # --- accounts -------------------------------------------------------------------------

    async def identify(self, token: str, request_type: str | None = None) -> User:
        """The account behind a token; raises InvalidToken or Banned."""
        return await self.users.identify(token, request_type)

    async def user(self, user_id: str) -> User | None:
        """The account with this id."""
        return await self.users.get(user_id)

    def visible_rooms(self, user: User) -> list[dict[str, Any]]:
        """Summaries of the rooms ``user`` may see, by name."""
        return self.directory.visible_rooms(user)

    async def check_file_access(self, user: User, file: FileRow) -> None:
        """Raise unless ``user`` may download ``file`` (see :class:`Attachments`)."""
        await self.attachments.check_access(user, file)

    async def _edit_message(self, conn: Connection, user: User, cmd: p.EditMessage) -> None:
        """A direct message's, or else a room message's."""
        if await self._direct.find(cmd.message_id) is not None:
            await self._direct.edit_message(conn, user, cmd)
        else:
            await self.messages.edit_message(conn, user, cmd)

    async def _delete_message(self, conn: Connection, user: User, cmd: p.DeleteMessage) -> None:
        """A direct message's, or else a room message's."""
        if await self._direct.find(cmd.message_id) is not None:
            await self._direct.delete_message(conn, user, cmd)
        else:
            await self.messages.delete_message(conn, user, cmd)

    async def _join_room(self, conn: Connection, user: User, cmd: p.JoinRoom) -> None:
        """Join; then how far the other members have read (``read_receipt``)."""
        await self.rooms.join_room(conn, user, cmd)
        await self.reads.room_receipts(conn, user, self.directory.by_id[cmd.room_id])

    async def _private_history(
        self, conn: Connection, user: User, cmd: p.GetPrivateHistory
    ) -> None:
        """A page; with the newest, how far the peer has read (``read_receipt``)."""
        await self._direct.private_history(conn, user, cmd)
        if cmd.before is None and cmd.user_id != user.id:
            await self.reads.peer_receipt(conn, user, cmd.user_id)

    async def _private_message(self, conn: Connection, user: User, cmd: p.PrivateMessage) -> None:
        """Send it; the two users now see each other's presence (on every node)."""
        await self._direct.private_message(conn, user, cmd)
        if self._peers.link(user.id, cmd.target_user_id):
            self._broker.send_control(
                orjson.dumps({"action": "peer", "userIds": [user.id, cmd.target_user_id]})
            )

    # --- connection lifecycle -------------------------------------------------------------

    async def authenticate(self, conn: Connection, user: User) -> None:
        """Bind ``conn`` to ``user``: ``authenticated`` reply (rooms and conversations with
        their unread state), presence, last seen."""
        await self.reads.load(user)
        rooms = await self.reads.rooms(user)
        conversations = await self.reads.conversations(user)
        if conn.closed:  # it closed while the state was read
            if not self._hub.user_conns(user.id):
                self.reads.forget(user)
            return
        first = self._hub.bind_user(conn, user.id)
        self._peers.learn(user.id, [c["user"]["id"] for c in conversations])
        self._hub.send(
            conn,
            event(
                "authenticated",
                {"user": user.private(), "rooms": rooms, "conversations": conversations},
            ),
        )
        if first:
            if not self._broker.online_elsewhere(user.id):
                self.rooms.announce_presence(user, "online")
            self._broker.share_presence(user.id, True)
        self._writes.offer(ops.touch_last_seen(user.id, utc_now_iso()))

    def disconnect(self, conn: Connection, user: User) -> None:
        """A connection of ``user`` closed: leave its rooms; the user's last one: offline."""
        self.rooms.leave_all(conn, user)
        if self._hub.unbind_user(conn, user.id):
            self.reads.forget(user)
            self._peers.forget(user.id)
            if not self._broker.online_elsewhere(user.id):
                self.rooms.announce_presence(user, "offline")
            self._broker.share_presence(user.id, False)
            self._writes.offer(ops.touch_last_seen(user.id, utc_now_iso()))

    def apply_remote(self, channel: Channel, payload: bytes) -> None:
        """What another node published in a room: keep this node's history and members true."""
        if payload.startswith(b'{"type":"user_joined"'):
            room = self.directory.by_id.get(channel.id)
            if room is not None:
                room.member_ids.add(orjson.loads(payload)["data"]["user"]["id"])
            return
        self.history.apply_remote(channel, payload)

    def apply_control(self, data: bytes) -> list[Connection]:
        """A change another process made to state every process keeps in memory (rooms,
        members, moderation, DM peers); returns the connections to close (a ban)."""
        control = orjson.loads(data)
        if control["action"] in ("room", "member"):
            self.rooms.apply_control(control)
            return []
        if control["action"] == "peer":
            self._peers.link(*control["userIds"])
            return []
        return self.moderation.apply_control(control)

    def presence_elsewhere(self, user_id: str, online: bool, at: str | None) -> None:
        """A user with no connection here came online on other nodes, or left the last;
        ``at``: the last beat of the user's node when it died (then also the last seen)."""
        task = asyncio.ensure_future(self._announce_elsewhere(user_id, online, at))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce_elsewhere(self, user_id: str, online: bool, at: str | None) -> None:
        user = await self.users.get(user_id)
        if user is not None and not self._hub.user_conns(user_id):
            status = "online" if online else "offline"
            self.rooms.announce_presence(user, status, at)
            if at is not None:  # its node died without writing it
                self._writes.offer(ops.touch_last_seen(user_id, at))

    async def ban_user(self, conn: Connection, user: User, cmd: p.BanUser) -> list[Connection]:
        """Ban an account; returns its live connections, for the session layer to close."""
        return await self.moderation.ban_user(conn, user, cmd)
