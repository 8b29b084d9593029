"""Rooms across processes and nodes: the :class:`~fastchat.fanout.broker.Broker` over Redis.

The only module that imports redis. Commands (the publish script, stream reads) go through
redis-py's asyncio client; the subscription is a socket of our own parsed by
``hiredis.Reader`` (redis-py's PubSub costs ~11 µs of Python per message, the Reader ~0.4).

**Order.** Every entry of a room goes through one Lua script per room and loop iteration
(:data:`_PUBLISH`): it takes the room's seq, gives each new message the next one, appends the
message to the room's capped stream under the id ``<seq>-0`` and publishes every entry on
the room's channel, atomically. Redis runs scripts one at a time, so every node — the origin
too, which delivers only what comes back on its subscription — sees one order. An entry is
``<seq>:<kind>:<origin node>:<excluded user>:<payload>``; ``kind`` is ``m`` (a message, which
has that seq), ``e`` (an event after that seq) or ``d`` (a droppable event).

**Gaps.** A node delivers a room's messages strictly in seq order. A message past the next
expected seq (a lost subscription, a subscription just made) starts a gap fill: what arrives
meanwhile waits while the stream is read from the node's last seq, then both are delivered
in order. After a reconnect every subscribed room is filled that way.

**Subscriptions.** A node is subscribed to a room's channel only while it has local members
(the hub tells it, :meth:`RedisBroker.occupied` / :meth:`RedisBroker.vacated`); messages
older than a new subscription update the room's history, not its members. Events for users
(direct messages, presence, moderation) travel on one channel every node subscribes to.

**Nodes and presence.** Each node beats every ``heartbeat_seconds`` into a sorted set of
nodes (:data:`_BEAT`, by Redis' clock) and counts its users' authenticated connections in a
hash of its own (:data:`_ADMIT`, which also holds the per-user connection cap across nodes).
A node's beat also reaps the nodes silent for ``node_timeout_seconds``: their hashes are
dropped and a ``gone`` entry tells every node to take their users offline. A node reads
the other nodes' hashes when it connects (and reconnects) to learn who is online elsewhere.

**Seqs after Redis lost its data.** The script never hands out a seq at or below the floor
the publishing node passes (the last seq it saw), and a node that finds Redis' epoch changed
raises its floors by ``gap`` (as an unclean restart does), so seqs never repeat.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fastchat.clock import iso_from_unix_ms
from fastchat.errors import Unavailable
from fastchat.fanout.broker import AlreadyPublished
from fastchat.protocol import event

if TYPE_CHECKING:
    from fastchat.config import BrokerConfig
    from fastchat.fanout.hub import Hub, Room
    from fastchat.ws.peer import Peer

log = logging.getLogger("fastchat.broker")

# KEYS: the room's meta hash, stream, channel. ARGV: the node's floor, the stream's length
# cap, the origin node, the clientId window, then five values per entry: kind; head + tail
# (a message: its payload is head .. seq .. tail) or excluded user + payload (an event); and
# for a message with a clientId its key and "<id> <timestamp>" (else two empty strings).
# Returns, per message, its seq, or "<seq> <id> <timestamp>" of the one published before
# under the same clientId (then nothing is published).
_PUBLISH = """
local seq = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local floor = tonumber(ARGV[1])
if seq < floor then seq = floor end
local seqs = {}
for i = 5, #ARGV, 5 do
  local kind = ARGV[i]
  if kind == 'm' then
    local key = ARGV[i + 3]
    local before = key ~= '' and redis.call('GET', key)
    if before then
      seqs[#seqs + 1] = before
    else
      seq = seq + 1
      local data = seq .. ':m:' .. ARGV[3] .. '::' .. ARGV[i + 1] .. seq .. ARGV[i + 2]
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'd', data)
      redis.call('PUBLISH', KEYS[3], data)
      if key ~= '' then redis.call('SET', key, seq .. ' ' .. ARGV[i + 4], 'EX', ARGV[4]) end
      seqs[#seqs + 1] = seq
    end
  else
    redis.call('PUBLISH', KEYS[3],
      seq .. ':' .. kind .. ':' .. ARGV[3] .. ':' .. ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
end
redis.call('HSET', KEYS[1], 's', seq)
return seqs
"""
# KEYS: rooms' meta hashes; ARGV: a seq for each. Raises each room's seq to at least that;
# returns the seqs.
_SEED = """
local seqs = {}
for i, key in ipairs(KEYS) do
  local seq = tonumber(redis.call('HGET', key, 's') or '0')
  local floor = tonumber(ARGV[i])
  if floor > seq then
    redis.call('HSET', key, 's', floor)
    seq = floor
  end
  seqs[i] = seq
end
return seqs
"""
# The nodes: a sorted set of node id -> last beat (ms, Redis' clock), and per node a hash
# of user id -> authenticated connections there. One hash tag: one Redis Cluster slot.
_NODES = "fc:{p}:nodes"
_NODE_USERS = "fc:{p}:n:"
# KEYS: the nodes. ARGV: this node, the timeout (ms), the users channel, the node hash
# prefix. Beats, then reaps the silent nodes: drops their hashes, publishes "gone" entries.
_BEAT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'WITHSCORES')
for i = 1, #dead, 2 do
  redis.call('ZREM', KEYS[1], dead[i])
  redis.call('DEL', ARGV[4] .. dead[i])
  redis.call('PUBLISH', ARGV[3], '!' .. dead[i] .. ':g:' .. dead[i + 1])
end
"""
# KEYS: the nodes, this node's hash. ARGV: the user, the cap, the node hash prefix.
# Counts one more connection of the user here unless the live nodes have the cap already.
_ADMIT = """
local open = 0
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  open = open + tonumber(redis.call('HGET', ARGV[3] .. node, ARGV[1]) or '0')
end
if open >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""
# KEYS: this node's hash. ARGV: the user. One connection less.
_RELEASE = """
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""
# How long Redis remembers a message's clientId, for resends to any node (seconds).
_RESEND_WINDOW = 600

_USERS_CHANNEL = b"fc:u"
_EVERYONE = b"*"
_SEQ_PLACEHOLDER = b'"seq":0,'
_RECONNECT_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)

Then = Callable[..., None]
_DIRECT_BLOCK = 1000  # direct-message seqs leased from Redis at a time


def _room_keys(room_id: str) -> tuple[str, str, str]:
    # {room_id} is a hash tag: the three keys land on one Redis Cluster slot.
    return f"fc:{{{room_id}}}:m", f"fc:{{{room_id}}}:x", f"fc:{{{room_id}}}:c"


class _Feed:
    """What a node knows of one room's entries: the last seq delivered, a gap fill under way."""

    __slots__ = ("channel", "filling", "last", "live_from", "room", "subscribed")

    def __init__(self, room: Room, last: int):
        self.room = room
        self.channel = _room_keys(room.id)[2].encode()
        self.last = last
        self.live_from = 0  # messages at or below this seq go to the history only
        self.subscribed = False
        self.filling: list[bytes] | None = None  # entries held while the stream is read


class _Subscription(asyncio.Protocol):
    """The pub/sub socket: commands out, replies parsed by hiredis into the broker."""

    def __init__(self, broker: RedisBroker):
        self._broker = broker
        self._reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        on_entry = self._broker._on_entry
        while (reply := reader.gets()) is not False:
            if type(reply) is not list:  # +OK of AUTH; an error reply is logged
                if isinstance(reply, hiredis.ReplyError):
                    log.error("redis subscription: %s", reply)
                continue
            if reply[0] == b"message":
                on_entry(reply[1], reply[2])
            elif reply[0] == b"subscribe":
                self._broker._subscribed(reply[1])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def send(self, *args: str | bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(hiredis.pack_command(args))


class RedisBroker:
    """A broker whose rooms span every node connected to the same Redis."""

    def __init__(self, hub: Hub, config: BrokerConfig, gap: int):
        self._hub = hub
        self._config = config
        self._gap = gap
        self.node_id = secrets.token_hex(6)
        self._node = self.node_id.encode()
        self._redis = aioredis.from_url(
            config.url,
            socket_timeout=config.timeout_seconds,
            socket_connect_timeout=config.timeout_seconds,
        )
        self._script = self._redis.register_script(_PUBLISH)
        self._seed = self._redis.register_script(_SEED)
        self._beat_script = self._redis.register_script(_BEAT)
        self._admit = self._redis.register_script(_ADMIT)
        self._release = self._redis.register_script(_RELEASE)
        self._node_key = _NODE_USERS + self.node_id
        self._feeds: dict[str, _Feed] = {}
        self._by_channel: dict[bytes, _Feed] = {}
        # room id -> [kind, a, b, kind, a, b, ...] and the callbacks of its messages, this turn
        self._batches: dict[str, list[bytes | str]] = {}
        self._waiting: dict[str, list[tuple[dict[str, Any], Then, tuple[Any, ...]]]] = {}
        self._user_batch: list[bytes] = []
        self._flush_scheduled = False
        self._busy: set[str] = set()  # rooms with a script in flight
        self._users_busy = False  # user events in flight
        self._direct_seq = 0
        self._direct_left = 0
        self._leasing = False
        self._epoch: bytes | None = None
        self._subscription: _Subscription | None = None
        self._runner: asyncio.Task[None] | None = None
        self._heart: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()
        self.connected = False
        self.last_error = ""
        self.remote_entry: Callable[[Room, bytes], None] = lambda room, payload: None
        """Set by the chat: told every room payload another node published, in order."""
        self.control: Callable[[bytes], None] = lambda data: None
        """Set by the sessions: told every moderation change another node made."""
        self.presence: Callable[[str, bool, str | None], None] = lambda user_id, online, at: None
        """Set by the chat: a user with no connection here came online on the other nodes
        (True) or went offline on all of them (False); ``at`` is, when the user's node died,
        its last beat (ISO), else None."""
        self._elsewhere: dict[str, set[bytes]] = {}  # user id -> other nodes it is online on

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and keep the subscription up; ConnectionError when Redis is unreachable."""
        try:
            await self._check_epoch()
            await self._seed_seqs()
            first = await self._subscribe()
            await self._join_nodes()
        except (RedisError, OSError, TimeoutError) as error:
            where = urlsplit(self._config.url).netloc.rpartition("@")[2]  # not the password
            raise ConnectionError(f"cannot reach Redis at {where}: {error}") from None
        await self._lease_direct()
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._keep_subscribed(first))
        self._heart = loop.create_task(self._heartbeat())

    async def close(self) -> None:
        """Stop the subscription, leave the nodes (the others take this one's users offline
        at once) and close the command connection."""
        for task in (self._runner, self._heart):
            if task is not None:
                task.cancel()
        # first, lest this node read its own "gone" and count itself in again
        if self._subscription is not None and self._subscription.transport is not None:
            self._subscription.transport.close()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(_NODES, self.node_id).delete(self._node_key)
                pipe.publish(_USERS_CHANNEL, b"!%s:g:" % self._node)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("cannot leave the nodes (the others time this one out): %s", error)
        await self._redis.aclose()

    async def _subscribe(self) -> _Subscription:
        parts = urlsplit(self._config.url)
        loop = asyncio.get_running_loop()
        _, subscription = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Subscription(self), parts.hostname or "127.0.0.1", parts.port or 6379
            ),
            self._config.timeout_seconds,
        )
        if parts.password:
            user = unquote(parts.username) if parts.username else "default"
            subscription.send("AUTH", user, unquote(parts.password))
        self._subscription = subscription
        subscription.send("SUBSCRIBE", _USERS_CHANNEL)
        for feed in self._feeds.values():
            if feed.subscribed:
                subscription.send("SUBSCRIBE", feed.channel)
        self.connected = True
        self.last_error = ""
        return subscription

    async def _keep_subscribed(self, subscription: _Subscription) -> None:
        attempt = 0
        while True:
            exc = await subscription.lost
            self.connected = False
            self.last_error = f"redis connection lost: {exc or 'closed by the server'}"
            log.warning("%s; reconnecting", self.last_error)
            while True:
                await asyncio.sleep(_RECONNECT_SECONDS[min(attempt, len(_RECONNECT_SECONDS) - 1)])
                attempt += 1
                try:
                    await self._check_epoch()
                    subscription = await self._subscribe()
                except (OSError, RedisError, TimeoutError) as error:
                    self.last_error = f"redis unreachable: {error}"
                    continue
                attempt = 0
                log.info("redis subscription restored; resynchronising %d rooms", len(self._feeds))
                break
            try:
                await self._join_nodes()
            except (OSError, RedisError, TimeoutError) as error:
                log.warning("presence not resynchronised (until the next reconnect): %s", error)

    # --- nodes and presence ---------------------------------------------------------------

    async def _join_nodes(self) -> None:
        """Count this node's connections in Redis again (Redis may have lost them, or reaped
        this node when it stalled), beat, say hello (the others re-read this node's users),
        and take who is online on the other nodes from their counts."""
        counts = {user_id: len(conns) for user_id, conns in self._hub.users.items()}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._node_key)
            if counts:
                pipe.hset(self._node_key, mapping=counts)
            pipe.publish(_USERS_CHANNEL, b"!%s:h:" % self._node)
            await pipe.execute()
        await self._beat()
        nodes = {node for node in await self._redis.zrange(_NODES, 0, -1) if node != self._node}
        for node in nodes:
            await self._read_node(node)
        absent = {node for users in self._elsewhere.values() for node in users} - nodes
        if absent:  # after Redis lost its data: until they beat again, or are dead
            self._hub.loop.call_later(
                self._config.node_timeout_seconds,
                lambda: self._hub.loop.create_task(self._expire_absent(absent)),
            )

    async def _read_node(self, node: bytes) -> None:
        """Take the users online on ``node`` from its counts."""
        found = await self._redis.hkeys(_NODE_USERS + node.decode())
        users = {user_id.decode() for user_id in found}
        for user_id in [user_id for user_id, nodes in self._elsewhere.items() if node in nodes]:
            if user_id not in users:
                self._presence_entry(node, False, user_id)
        for user_id in users:
            self._presence_entry(node, True, user_id)

    async def _expire_absent(self, absent: set[bytes]) -> None:
        try:
            live = set(await self._redis.zrange(_NODES, 0, -1))
        except (OSError, RedisError, TimeoutError) as error:
            log.warning("absent nodes not checked (until the next reconnect): %s", error)
            return
        for node in absent - live:
            self._node_gone(node, b"")

    def _hello(self, node: bytes) -> None:
        """A node (re)joined: read its users (it may have had some before Redis restarted)."""
        if node != self._node:
            self._hub.loop.create_task(self._read_node_logged(node))

    async def _read_node_logged(self, node: bytes) -> None:
        try:
            await self._read_node(node)
        except (OSError, RedisError, TimeoutError) as error:
            log.warning("users of node %s not read: %s", node.decode(), error)

    async def _beat(self) -> None:
        await self._beat_script(
            keys=[_NODES],
            args=[
                self.node_id,
                int(self._config.node_timeout_seconds * 1000),
                _USERS_CHANNEL,
                _NODE_USERS,
            ],
        )

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._config.heartbeat_seconds)
            try:
                await self._beat()
            except (OSError, RedisError, TimeoutError) as error:
                if not failing:  # once per outage: the subscription reports it too
                    log.warning("node heartbeat failed: %s", error)
                failing = True
                continue
            failing = False

    def _node_gone(self, node: bytes, beat: bytes) -> None:
        """A node left, or was silent past the timeout: its users are not online there."""
        if node == self._node:  # this node stalled past the timeout: count it in again
            log.warning("this node was taken for dead (a stall?); rejoining")
            self._hub.loop.create_task(self._rejoin())
            return
        at = iso_from_unix_ms(int(float(beat))) if beat else None
        for user_id in [user_id for user_id, nodes in self._elsewhere.items() if node in nodes]:
            nodes = self._elsewhere[user_id]
            nodes.discard(node)
            if not nodes:
                del self._elsewhere[user_id]
                if not self._hub.user_conns(user_id):
                    self.presence(user_id, False, at)

    async def _rejoin(self) -> None:
        try:
            await self._join_nodes()
        except (OSError, RedisError, TimeoutError) as error:
            log.warning("cannot rejoin the nodes (retried at the next reconnect): %s", error)

    async def admit(self, user_id: str, limit: int) -> bool:
        """Count one more connection of ``user_id`` here, unless the user has ``limit``
        connections across the nodes already. Admits when Redis cannot answer (each node
        still holds the cap on its own)."""
        try:
            return bool(
                await asyncio.ensure_future(
                    self._admit(keys=[_NODES, self._node_key], args=[user_id, limit, _NODE_USERS])
                )
            )
        except (OSError, RedisError, TimeoutError) as error:
            log.warning("connection cap of %s not checked across nodes: %s", user_id, error)
            return True

    def release(self, user_id: str) -> None:
        """One connection of ``user_id`` admitted here closed."""
        task = self._hub.loop.create_task(self._release_one(user_id))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release_one(self, user_id: str) -> None:
        try:
            await self._release(keys=[self._node_key], args=[user_id])
        except (OSError, RedisError, TimeoutError) as error:
            # recounted from the hub when the subscription is restored
            log.warning("connection of %s not uncounted in Redis: %s", user_id, error)

    async def _seed_seqs(self) -> None:
        """Raise each room's seq in Redis to this node's last one (the store's, plus the
        unclean-stop gap) and start from the result, so that every node counts from the same
        seq and none takes another's messages for ones it has seen."""
        feeds = list(self._feeds.values())
        for start in range(0, len(feeds), 1000):
            chunk = feeds[start : start + 1000]
            seqs = await self._seed(
                keys=[_room_keys(feed.room.id)[0] for feed in chunk],
                args=[feed.last for feed in chunk],
            )
            for feed, seq in zip(chunk, seqs, strict=True):
                feed.last = seq

    async def _check_epoch(self) -> None:
        """Raise every floor by ``gap`` when Redis lost its data (a new epoch)."""
        await self._redis.set("fc:epoch", secrets.token_hex(8), nx=True)
        epoch = await self._redis.get("fc:epoch")
        if self._epoch is not None and epoch != self._epoch:
            log.warning(
                "redis lost its data (new epoch): seqs continue %d past the last", self._gap
            )
            for feed in self._feeds.values():
                feed.last += self._gap
            await self._seed_seqs()
            self._direct_left = 0
        self._epoch = epoch

    # --- the Broker protocol --------------------------------------------------------------

    def open_room(self, room_id: str, last_seq: int) -> Room:
        room = self._hub.open_room(room_id)
        feed = self._feeds[room_id] = _Feed(room, last_seq)
        self._by_channel[feed.channel] = feed
        return room

    def open_direct(self, last_seq: int) -> None:
        self._direct_seq = last_seq

    def next_direct_seq(self) -> int:
        """Seqs from a block leased from Redis (unique across nodes, ordered per node)."""
        if self._direct_left <= 0:
            self._lease_soon()
            raise Unavailable("The message broker is unavailable: resend with the same clientId")
        self._direct_left -= 1
        self._direct_seq += 1
        if self._direct_left == _DIRECT_BLOCK // 2:
            self._lease_soon()
        return self._direct_seq

    def _lease_soon(self) -> None:
        if not self._leasing:
            self._leasing = True
            self._hub.loop.create_task(self._lease_direct())

    async def _lease_direct(self) -> None:
        try:
            end = await self._redis.incrby("fc:dm", _DIRECT_BLOCK)
            if end - _DIRECT_BLOCK < self._direct_seq:  # Redis lost the counter
                end = await self._redis.incrby("fc:dm", self._direct_seq + self._gap)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("direct-message seqs: cannot lease a block: %s", error)
            return
        finally:
            self._leasing = False
        self._direct_seq = end - _DIRECT_BLOCK
        self._direct_left = _DIRECT_BLOCK

    def publish_message(self, room: Room, message: dict[str, Any], then: Then, *args: Any) -> None:
        """Queue ``message`` for the room's next publish; ``then(error, message, *args)``
        runs when Redis gave it its seq (``error`` is None) or could not (an Unavailable)."""
        payload = event("new_message", {"message": message})
        cut = payload.index(_SEQ_PLACEHOLDER) + 6
        client_id = message["clientId"]
        if client_id is None:
            self._entry(room.id, b"m", payload[:cut], payload[cut + 1 :])
        else:
            self._entry(
                room.id,
                b"m",
                payload[:cut],
                payload[cut + 1 :],
                f"fc:{{{room.id}}}:k:{message['userId']}:{client_id}",
                f"{message['id']} {message['timestamp']}",
            )
        self._waiting.setdefault(room.id, []).append((message, then, args))

    def publish(
        self,
        room: Room,
        payload: bytes,
        *,
        droppable: bool = False,
        exclude: Iterable[Peer] = (),
    ) -> None:
        excluded = next((peer.user_id for peer in exclude), None) or ""
        self._entry(room.id, b"d" if droppable else b"e", excluded, payload)

    def send_user(self, user_id: str, payload: bytes, *, droppable: bool = False) -> None:
        self._user_batch.append(
            b"%s:%s:%s" % (user_id.encode(), b"d" if droppable else b"e", payload)
        )
        self._schedule()

    def send_everyone(self, payload: bytes) -> None:
        self._user_batch.append(b"*:e:" + payload)
        self._schedule()

    def send_control(self, data: bytes) -> None:
        self._user_batch.append(b"!%s:c:%s" % (self._node, data))
        self._schedule()

    def online_elsewhere(self, user_id: str) -> bool:
        """Whether another node has told it has connections of ``user_id``."""
        return user_id in self._elsewhere

    def users_elsewhere(self) -> Collection[str]:
        """The users with connections on other nodes."""
        return self._elsewhere.keys()

    def share_presence(self, user_id: str, online: bool) -> None:
        """Tell the other nodes this one got its first connection of a user, or lost its last."""
        self._user_batch.append(
            b"!%s:p:%s%s" % (self._node, b"1" if online else b"0", user_id.encode())
        )
        self._schedule()

    def _entry(
        self, room_id: str, kind: bytes, a: bytes | str, b: bytes, key: str = "", value: str = ""
    ) -> None:
        batch = self._batches.get(room_id)
        if batch is None:
            batch = self._batches[room_id] = []
        batch += (kind, a, b, key, value)
        self._schedule()

    # --- publishing: one script per room and loop iteration -------------------------------

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._hub.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        loop = self._hub.loop
        # One script in flight per room, so a connection's messages keep their order; what
        # comes meanwhile goes in the room's next one.
        for room_id in [room_id for room_id in self._batches if room_id not in self._busy]:
            self._busy.add(room_id)
            batch = self._batches.pop(room_id)
            loop.create_task(self._publish_room(room_id, batch, self._waiting.pop(room_id, ())))
        if self._user_batch and not self._users_busy:  # in order too: presence on, then off
            users, self._user_batch = self._user_batch, []
            self._users_busy = True
            loop.create_task(self._publish_users(users))

    async def _publish_room(
        self,
        room_id: str,
        batch: list[bytes | str],
        waiting: Iterable[tuple[dict[str, Any], Then, tuple[Any, ...]]],
    ) -> None:
        feed = self._feeds[room_id]
        try:
            seqs = await self._script(
                keys=_room_keys(room_id),
                args=[feed.last, self._config.stream_max, self._node, _RESEND_WINDOW, *batch],
            )
        except (RedisError, OSError, TimeoutError) as error:
            seqs = None
            self._refuse(room_id, error, waiting)
        finally:
            self._busy.discard(room_id)
            if room_id in self._batches:
                self._schedule()
        if seqs is not None:
            for seq, (message, then, args) in zip(seqs, waiting, strict=True):
                if type(seq) is int:
                    message["seq"] = seq
                    then(None, message, *args)
                else:
                    seq_text, message_id, timestamp = seq.decode().split(" ")
                    message.update(seq=int(seq_text), id=message_id, timestamp=timestamp)
                    then(AlreadyPublished(), message, *args)

    def _refuse(
        self,
        room_id: str,
        error: BaseException,
        waiting: Iterable[tuple[dict[str, Any], Then, tuple[Any, ...]]],
    ) -> None:
        log.warning("publish to room %s failed: %s", room_id, error)
        self.last_error = f"redis publish failed: {error}"
        refusal = Unavailable("The message broker is unavailable: resend with the same clientId")
        for message, then, args in waiting:
            then(refusal, message, *args)

    async def _publish_users(self, entries: list[bytes]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.publish(_USERS_CHANNEL, entry)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("%d user events not published: %s", len(entries), error)
            self.last_error = f"redis publish failed: {error}"
        finally:
            self._users_busy = False
            if self._user_batch:
                self._schedule()

    # --- receiving ------------------------------------------------------------------------

    async def follow(self, room: Room) -> None:
        """Before a connection enters ``room``: when this node is not subscribed to it, note
        the room's seq now, so that what is published from then on reaches the newcomer (by
        the subscription, or the fill that follows it) and what came before does not."""
        feed = self._feeds.get(room.id)
        if feed is None or feed.subscribed:
            return
        try:
            # a task of its own: redis-py's timeouts need one, and a join may run outside any
            seq = await asyncio.ensure_future(self._redis.hget(_room_keys(room.id)[0], "s"))
            feed.live_from = int(seq or 0)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("room %s: cannot read its seq: %s", room.id, error)
            feed.live_from = feed.last

    def occupied(self, room: Room) -> None:
        """The room got its first local member: subscribe to its channel."""
        feed = self._feeds.get(room.id)
        if feed is not None and not feed.subscribed:
            feed.subscribed = True
            if self._subscription is not None:
                self._subscription.send("SUBSCRIBE", feed.channel)

    def vacated(self, room: Room) -> None:
        """The room's last local member left: unsubscribe."""
        feed = self._feeds.get(room.id)
        if feed is not None and feed.subscribed:
            feed.subscribed = False
            if self._subscription is not None:
                self._subscription.send("UNSUBSCRIBE", feed.channel)

    def _subscribed(self, channel: bytes) -> None:
        """A SUBSCRIBE took effect: read what was published before it."""
        feed = self._by_channel.get(channel)
        if feed is not None:
            self._start_fill(feed)

    def _on_entry(self, channel: bytes, data: bytes) -> None:
        if channel == _USERS_CHANNEL:
            self._on_user_entry(data)
            return
        feed = self._by_channel.get(channel)
        if feed is None:
            return
        # Messages wait for a gap to be filled; events (typing, joins, edits) have no seq of
        # their own and go on at once, lest they fall behind the users channel's.
        if feed.filling is not None:
            if _seq_kind(data)[1] == b"m":
                feed.filling.append(data)
                return
        elif _after_gap(feed, data):
            self._start_fill(feed)
            if _seq_kind(data)[1] == b"m":
                feed.filling.append(data)  # type: ignore[union-attr]
                return
        self._apply(feed, data)

    def _apply(self, feed: _Feed, data: bytes) -> None:
        """Deliver one entry, in order (messages at or below the last seq are repeats)."""
        seq_text, kind, origin, excluded, payload = data.split(b":", 4)
        if kind == b"m":
            seq = int(seq_text)
            if seq <= feed.last:
                return
            feed.last = seq
            if origin != self._node:
                self.remote_entry(feed.room, payload)
            if seq <= feed.live_from:
                return
            self._hub.publish(feed.room, payload)
            return
        if origin != self._node:
            self.remote_entry(feed.room, payload)
        exclude = self._hub.user_conns(excluded.decode()) if excluded else ()
        self._hub.publish(feed.room, payload, droppable=kind == b"d", exclude=exclude)

    def _start_fill(self, feed: _Feed) -> None:
        if feed.filling is None:  # else one is under way
            feed.filling = []
            self._hub.loop.create_task(self._fill(feed))

    async def _fill(self, feed: _Feed) -> None:
        """Deliver the stream past ``feed.last``, then what arrived meanwhile."""
        try:
            entries = await self._redis.xrange(
                _room_keys(feed.room.id)[1], f"{feed.last + 1}-0", "+"
            )
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("room %s: cannot read its stream: %s", feed.room.id, error)
            entries = []
        if entries and int(entries[0][0].split(b"-")[0]) > feed.last + 1:
            log.warning(
                "room %s: seqs %d..%s are past the stream's length; clients catch up from storage",
                feed.room.id,
                feed.last + 1,
                entries[0][0],
            )
            feed.last = int(entries[0][0].split(b"-")[0]) - 1
        held, feed.filling = feed.filling or [], None
        for _, fields in entries:
            self._apply(feed, fields[b"d"])
        for data in held:
            if _after_gap(feed, data):  # not in the stream (Redis lost it): skip ahead
                seq, kind = _seq_kind(data)
                feed.last = seq - (kind == b"m")
                log.warning("room %s: entries up to seq %d were lost", feed.room.id, feed.last)
            self._apply(feed, data)

    def _presence_entry(self, node: bytes, online: bool, user_id: str) -> None:
        nodes = self._elsewhere.get(user_id)
        before = nodes is not None
        if online:
            if nodes is None:
                nodes = self._elsewhere[user_id] = set()
            nodes.add(node)
        elif nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._elsewhere[user_id]
        if before != (user_id in self._elsewhere) and not self._hub.user_conns(user_id):
            self.presence(user_id, online, None)

    def _on_user_entry(self, data: bytes) -> None:
        user_id, kind, payload = data.split(b":", 2)
        hub = self._hub
        if kind == b"c":
            if user_id[1:] != self._node:
                self.control(payload)
        elif kind == b"p":
            if user_id[1:] != self._node:
                self._presence_entry(user_id[1:], payload[:1] == b"1", payload[1:].decode())
        elif kind == b"g":
            self._node_gone(user_id[1:], payload)
        elif kind == b"h":
            self._hello(user_id[1:])
        elif user_id == _EVERYONE:
            hub.send_to_all(payload)
        else:
            hub.send_many(hub.user_conns(user_id.decode()), payload, droppable=kind == b"d")


def _seq_kind(data: bytes) -> tuple[int, bytes]:
    seq, kind, _ = data.split(b":", 2)
    return int(seq), kind


def _after_gap(feed: _Feed, data: bytes) -> bool:
    """Whether entries ``feed`` has not seen come before this one."""
    seq, kind = _seq_kind(data)
    return seq > feed.last + 1 if kind == b"m" else seq > feed.last
