"""The WebSocket wire protocol: JSON text frames to typed commands, and events back to bytes.

Pure (no I/O) and on the hot path: every incoming frame goes through :func:`parse`, which
decodes with orjson and dispatches on ``type`` through a dict of per-type parsers. Each
parser validates its fields and builds a command; anything wrong raises a
:class:`~fastchat.errors.ChatError` subclass naming the request type and the wire field.
Unknown extra fields are ignored, and an optional field sent as ``null`` counts as absent.

Commands are slotted dataclasses that nobody mutates; they are not ``frozen`` because a
frozen dataclass sets each field through ``object.__setattr__``, which made building one
about 5x slower (2.5 vs 0.5 µs for SendMessage) — the largest part of a parse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, TypeAlias

import orjson

from fastchat.errors import ChatError, InvalidJson, RateLimited, UnknownType, ValidationError
from fastchat.names import BLANK, unsafe_character
from fastchat.roles import ROLES

MAX_ID_CHARS = 64
MAX_CONTENT_CHARS = 2000
MAX_ROOM_NAME_CHARS = 64
MAX_TEXT_CHARS = 256  # room descriptions and kick/ban reasons
MAX_HISTORY_LIMIT = 200
DEFAULT_HISTORY_LIMIT = 50
MAX_DURATION_SECONDS = 31_536_000
MAX_SEQ = 2**63 - 1  # SQLite INTEGER
MESSAGE_TYPES = frozenset({"text", "image", "file"})
MAX_QUERY_CHARS = 200
MAX_SEARCH_LIMIT = 50
DEFAULT_SEARCH_LIMIT = 20
SHORTCODES: dict[str, str] = {
    ":+1:": "\U0001f44d",
    ":thumbsup:": "\U0001f44d",
    ":-1:": "\U0001f44e",
    ":thumbsdown:": "\U0001f44e",
    ":heart:": "\u2764\ufe0f",
    ":joy:": "\U0001f602",
    ":smile:": "\U0001f604",
    ":laughing:": "\U0001f606",
    ":wink:": "\U0001f609",
    ":thinking:": "\U0001f914",
    ":cry:": "\U0001f622",
    ":open_mouth:": "\U0001f62e",
    ":tada:": "\U0001f389",
    ":fire:": "\U0001f525",
    ":eyes:": "\U0001f440",
    ":rocket:": "\U0001f680",
    ":clap:": "\U0001f44f",
    ":pray:": "\U0001f64f",
    ":100:": "\U0001f4af",
    ":white_check_mark:": "\u2705",
    ":x:": "\u274c",
    ":wave:": "\U0001f44b",
}
"""The ``:shortcode:`` reactions accepted, and the emoji each one stands for."""


@dataclass(slots=True)
class Authenticate:
    """Log this connection in with a JWT."""

    TYPE: ClassVar[str] = "authenticate"
    token: str


@dataclass(slots=True)
class JoinRoom:
    """Join a room; with ``since``, also replay every message with a greater seq."""

    TYPE: ClassVar[str] = "join_room"
    room_id: str
    since: int | None = None


@dataclass(slots=True)
class LeaveRoom:
    """Leave a room."""

    TYPE: ClassVar[str] = "leave_room"
    room_id: str


@dataclass(slots=True)
class SendMessage:
    """Post a message to a room; ``file_id`` is set exactly for image/file messages."""

    TYPE: ClassVar[str] = "send_message"
    room_id: str
    content: str
    message_type: str = "text"
    reply_to: str | None = None
    client_id: str | None = None
    file_id: str | None = None


@dataclass(slots=True)
class EditMessage:
    """Replace the content of one's own message."""

    TYPE: ClassVar[str] = "edit_message"
    message_id: str
    content: str


@dataclass(slots=True)
class DeleteMessage:
    """Delete a message."""

    TYPE: ClassVar[str] = "delete_message"
    message_id: str


@dataclass(slots=True)
class GetRoomHistory:
    """Page through a room's messages by seq (``before``/``after`` are exclusive)."""

    TYPE: ClassVar[str] = "get_room_history"
    room_id: str
    limit: int = DEFAULT_HISTORY_LIMIT
    before: int | None = None
    after: int | None = None


@dataclass(slots=True)
class Typing:
    """``typing_start`` (``typing=True``) or ``typing_stop`` (``typing=False``)."""

    room_id: str
    typing: bool

    @property
    def TYPE(self) -> str:
        """The wire type this command came from."""
        return "typing_start" if self.typing else "typing_stop"


@dataclass(slots=True)
class PrivateMessage:
    """Send a direct message to another user, maybe in reply to one of the conversation;
    ``file_id`` is set exactly for image/file messages."""

    TYPE: ClassVar[str] = "private_message"
    target_user_id: str
    content: str
    client_id: str | None = None
    reply_to: str | None = None
    message_type: str = "text"
    file_id: str | None = None


@dataclass(slots=True)
class GetPrivateHistory:
    """Page through the direct messages with one user by dm seq."""

    TYPE: ClassVar[str] = "get_private_history"
    user_id: str
    limit: int = DEFAULT_HISTORY_LIMIT
    before: int | None = None


@dataclass(slots=True)
class CreateRoom:
    """Create a room; ``name`` is stripped."""

    TYPE: ClassVar[str] = "create_room"
    name: str
    description: str = ""
    is_private: bool = False


@dataclass(slots=True)
class InviteToRoom:
    """Add a user to a (private) room."""

    TYPE: ClassVar[str] = "invite_to_room"
    room_id: str
    user_id: str


@dataclass(slots=True)
class KickUser:
    """Remove a user from a room."""

    TYPE: ClassVar[str] = "kick_user"
    room_id: str
    user_id: str
    reason: str | None = None


@dataclass(slots=True)
class MuteUser:
    """Stop a user posting in a room for a while."""

    TYPE: ClassVar[str] = "mute_user"
    room_id: str
    user_id: str
    duration_seconds: int


@dataclass(slots=True)
class BanUser:
    """Ban a user from the server; ``duration_seconds=None`` means permanently."""

    TYPE: ClassVar[str] = "ban_user"
    user_id: str
    reason: str | None = None
    duration_seconds: int | None = None


@dataclass(slots=True)
class UnbanUser:
    """Lift a ban."""

    TYPE: ClassVar[str] = "unban_user"
    user_id: str


@dataclass(slots=True)
class SetRole:
    """Change a user's server-wide role."""

    TYPE: ClassVar[str] = "set_role"
    user_id: str
    role: str


@dataclass(slots=True)
class MarkRead:
    """Move the read marker of a room (``room_id``) or a DM conversation (``user_id``)."""

    TYPE: ClassVar[str] = "mark_read"
    room_id: str | None
    user_id: str | None
    seq: int


@dataclass(slots=True)
class Reaction:
    """``add_reaction`` (``added=True``) or ``remove_reaction``; ``emoji`` is normalized
    (a ``:shortcode:`` becomes its emoji)."""

    message_id: str
    emoji: str
    added: bool

    @property
    def TYPE(self) -> str:
        """The wire type this command came from."""
        return "add_reaction" if self.added else "remove_reaction"


@dataclass(slots=True)
class GetThread:
    """Page through the replies to a message by seq (``before`` is exclusive)."""

    TYPE: ClassVar[str] = "get_thread"
    message_id: str
    limit: int = DEFAULT_HISTORY_LIMIT
    before: int | None = None


@dataclass(slots=True)
class Search:
    """Full-text search over the messages the user may see; ``before`` is a message id."""

    TYPE: ClassVar[str] = "search"
    query: str
    room_id: str | None = None
    limit: int = DEFAULT_SEARCH_LIMIT
    before: str | None = None


@dataclass(slots=True)
class Ping:
    """App-level ping, answered with ``pong``."""

    TYPE: ClassVar[str] = "ping"


Command: TypeAlias = (
    Authenticate
    | JoinRoom
    | LeaveRoom
    | SendMessage
    | EditMessage
    | DeleteMessage
    | GetRoomHistory
    | Typing
    | PrivateMessage
    | GetPrivateHistory
    | CreateRoom
    | InviteToRoom
    | KickUser
    | MuteUser
    | BanUser
    | UnbanUser
    | SetRole
    | MarkRead
    | Reaction
    | GetThread
    | Search
    | Ping
)

_Fields = dict[str, Any]


# --- field validators: fast path first, the specific message only on failure --------------


def _fail(t: str, key: str, message: str) -> NoReturn:
    raise ValidationError(message, request_type=t, field=key)


def _id(d: _Fields, t: str, key: str) -> str:
    v = d.get(key)
    if type(v) is str and 0 < len(v) <= MAX_ID_CHARS:
        return v
    if v is None:
        _fail(t, key, f"{key} is required")
    _bad_id(t, key, v)


def _opt_id(d: _Fields, t: str, key: str) -> str | None:
    v = d.get(key)
    if v is None or (type(v) is str and 0 < len(v) <= MAX_ID_CHARS):
        return v
    _bad_id(t, key, v)


def _bad_id(t: str, key: str, v: object) -> NoReturn:
    if type(v) is not str:
        _fail(t, key, f"{key} must be a string")
    if not v:
        _fail(t, key, f"{key} must not be empty")
    _fail(t, key, f"{key} is too long (max {MAX_ID_CHARS} characters)")


def _content(d: _Fields, t: str) -> str:
    v = d.get("content")
    if type(v) is not str:
        _fail(t, "content", "content is required" if v is None else "content must be a string")
    if not v.strip(BLANK):  # empty, or only spaces and zero-width characters
        _fail(t, "content", "Message content cannot be empty")
    if len(v) > MAX_CONTENT_CHARS:
        _fail(t, "content", f"Message too long (max {MAX_CONTENT_CHARS} characters)")
    return v


def _opt_text(d: _Fields, t: str, key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if type(v) is not str:
        _fail(t, key, f"{key} must be a string")
    if len(v) > MAX_TEXT_CHARS:
        _fail(t, key, f"{key} is too long (max {MAX_TEXT_CHARS} characters)")
    return v


def _opt_int(d: _Fields, t: str, key: str, lo: int, hi: int) -> int | None:
    v = d.get(key)
    if v is None or (type(v) is int and lo <= v <= hi):
        return v
    if type(v) is not int:  # bool is a subclass of int, and not accepted
        _fail(t, key, f"{key} must be an integer")
    _fail(t, key, f"{key} must be between {lo} and {hi}")


def _int(d: _Fields, t: str, key: str, lo: int, hi: int) -> int:
    v = _opt_int(d, t, key, lo, hi)
    if v is None:
        _fail(t, key, f"{key} is required")
    return v


def _limit(d: _Fields, t: str) -> int:
    v = _opt_int(d, t, "limit", 1, MAX_HISTORY_LIMIT)
    return DEFAULT_HISTORY_LIMIT if v is None else v


def _seq(d: _Fields, t: str, key: str) -> int | None:
    return _opt_int(d, t, key, 0, MAX_SEQ)


# --- one parser per wire type ---------------------------------------------------------------


def _authenticate(d: _Fields) -> Authenticate:
    t = "authenticate"
    v = d.get("token")
    if type(v) is not str or not v:
        _fail(t, "token", "token is required" if v is None else "token must be a non-empty string")
    return Authenticate(v)


def _join_room(d: _Fields) -> JoinRoom:
    t = "join_room"
    return JoinRoom(_id(d, t, "roomId"), _seq(d, t, "since"))


def _leave_room(d: _Fields) -> LeaveRoom:
    return LeaveRoom(_id(d, "leave_room", "roomId"))


def _send_message(d: _Fields) -> SendMessage:
    t = "send_message"
    room_id = _id(d, t, "roomId")
    if "messageType" not in d and "fileId" not in d:  # a plain message: the common case
        return SendMessage(
            room_id, _content(d, t), "text", _opt_id(d, t, "replyTo"), _opt_id(d, t, "clientId")
        )
    message_type, file_id, content = _typed_content(d, t)
    return SendMessage(
        room_id, content, message_type, _opt_id(d, t, "replyTo"), _opt_id(d, t, "clientId"), file_id
    )


def _typed_content(d: _Fields, t: str) -> tuple[str, str | None, str]:
    """A message's ``messageType``, ``fileId`` (exactly for image/file messages) and
    content (a caption, optional on those)."""
    message_type = d.get("messageType")
    if message_type is None:
        message_type = "text"
    elif type(message_type) is not str or message_type not in MESSAGE_TYPES:
        _fail(t, "messageType", "messageType must be one of: text, image, file")
    file_id = _opt_id(d, t, "fileId")
    if message_type == "text":
        if file_id is not None:
            _fail(t, "fileId", "fileId is only allowed for image and file messages")
    elif file_id is None:
        _fail(t, "fileId", f"fileId is required for {message_type} messages")
    # A caption is optional on attachments; text messages need content.
    content = "" if message_type != "text" and d.get("content") in (None, "") else _content(d, t)
    return message_type, file_id, content


def _edit_message(d: _Fields) -> EditMessage:
    t = "edit_message"
    return EditMessage(_id(d, t, "messageId"), _content(d, t))


def _delete_message(d: _Fields) -> DeleteMessage:
    return DeleteMessage(_id(d, "delete_message", "messageId"))


def _get_room_history(d: _Fields) -> GetRoomHistory:
    t = "get_room_history"
    return GetRoomHistory(
        _id(d, t, "roomId"), _limit(d, t), _seq(d, t, "before"), _seq(d, t, "after")
    )


def _typing_start(d: _Fields) -> Typing:
    return Typing(_id(d, "typing_start", "roomId"), True)


def _typing_stop(d: _Fields) -> Typing:
    return Typing(_id(d, "typing_stop", "roomId"), False)


def _private_message(d: _Fields) -> PrivateMessage:
    t = "private_message"
    target_user_id = _id(d, t, "targetUserId")
    if "messageType" not in d and "fileId" not in d:  # a plain message: the common case
        return PrivateMessage(
            target_user_id, _content(d, t), _opt_id(d, t, "clientId"), _opt_id(d, t, "replyTo")
        )
    message_type, file_id, content = _typed_content(d, t)
    return PrivateMessage(
        target_user_id,
        content,
        _opt_id(d, t, "clientId"),
        _opt_id(d, t, "replyTo"),
        message_type,
        file_id,
    )


def _get_private_history(d: _Fields) -> GetPrivateHistory:
    t = "get_private_history"
    return GetPrivateHistory(_id(d, t, "userId"), _limit(d, t), _seq(d, t, "before"))


def _create_room(d: _Fields) -> CreateRoom:
    t = "create_room"
    name = d.get("name")
    if type(name) is not str:
        _fail(t, "name", "name is required" if name is None else "name must be a string")
    name = name.strip()
    if not name:
        _fail(t, "name", "name must not be empty")
    if len(name) > MAX_ROOM_NAME_CHARS:
        _fail(t, "name", f"name is too long (max {MAX_ROOM_NAME_CHARS} characters)")
    if unsafe_character(name) is not None:
        _fail(t, "name", "name must not hold control, invisible or text-direction characters")
    is_private = d.get("isPrivate")
    if is_private is None:
        is_private = False
    elif type(is_private) is not bool:
        _fail(t, "isPrivate", "isPrivate must be true or false")
    return CreateRoom(name, _opt_text(d, t, "description") or "", is_private)


def _invite_to_room(d: _Fields) -> InviteToRoom:
    t = "invite_to_room"
    return InviteToRoom(_id(d, t, "roomId"), _id(d, t, "userId"))


def _kick_user(d: _Fields) -> KickUser:
    t = "kick_user"
    return KickUser(_id(d, t, "roomId"), _id(d, t, "userId"), _opt_text(d, t, "reason"))


def _mute_user(d: _Fields) -> MuteUser:
    t = "mute_user"
    return MuteUser(
        _id(d, t, "roomId"),
        _id(d, t, "userId"),
        _int(d, t, "durationSeconds", 1, MAX_DURATION_SECONDS),
    )


def _ban_user(d: _Fields) -> BanUser:
    t = "ban_user"
    return BanUser(
        _id(d, t, "userId"),
        _opt_text(d, t, "reason"),
        _opt_int(d, t, "durationSeconds", 1, MAX_DURATION_SECONDS),
    )


def _unban_user(d: _Fields) -> UnbanUser:
    return UnbanUser(_id(d, "unban_user", "userId"))


def _set_role(d: _Fields) -> SetRole:
    t = "set_role"
    user_id = _id(d, t, "userId")
    role = d.get("role")
    if role is None:
        _fail(t, "role", "role is required")
    if type(role) is not str or role not in ROLES:
        _fail(t, "role", f"role must be one of: {', '.join(ROLES)}")
    return SetRole(user_id, role)


def _mark_read(d: _Fields) -> MarkRead:
    t = "mark_read"
    room_id = _opt_id(d, t, "roomId")
    user_id = _opt_id(d, t, "userId")
    if (room_id is None) == (user_id is None):
        _fail(t, "roomId", "exactly one of roomId and userId is required")
    return MarkRead(room_id, user_id, _int(d, t, "seq", 0, MAX_SEQ))


# One emoji grapheme: a pictograph (or a keycap base, or two regional indicators), with
# variation selectors, skin tones, keycap and tag marks, and zero-width joiners between.
_EMOJI_MODIFIERS = frozenset(
    [0xFE0F, 0xFE0E, 0x20E3, *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)]
)
_MAX_EMOJI_CODEPOINTS = 16


def _is_pictograph(c: int) -> bool:
    return (
        0x1F000 <= c <= 0x1FAFF
        or 0x2600 <= c <= 0x27BF
        or 0x2300 <= c <= 0x23FF
        or 0x2B00 <= c <= 0x2BFF
        or c in (0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x3030, 0x303D, 0x3297, 0x3299)
    )


def is_emoji(text: str) -> bool:
    """Whether ``text`` is exactly one emoji grapheme (the common shapes of one)."""
    codes = [ord(ch) for ch in text]
    if not codes or len(codes) > _MAX_EMOJI_CODEPOINTS:
        return False
    if all(0x1F1E6 <= c <= 0x1F1FF for c in codes):
        return len(codes) == 2  # a flag
    if text[0] in "0123456789#*":
        return codes[1:] in ([0xFE0F, 0x20E3], [0x20E3])
    expect_base = True
    for c in codes:
        if expect_base:
            if not _is_pictograph(c) or 0x1F1E6 <= c <= 0x1F1FF or 0x1F3FB <= c <= 0x1F3FF:
                return False
            expect_base = False
        elif c == 0x200D:
            expect_base = True
        elif c not in _EMOJI_MODIFIERS:
            return False
    return not expect_base


def _reaction(d: _Fields, t: str, added: bool) -> Reaction:
    message_id = _id(d, t, "messageId")
    v = d.get("emoji")
    if type(v) is not str:
        _fail(t, "emoji", "emoji is required" if v is None else "emoji must be a string")
    emoji = SHORTCODES.get(v)
    if emoji is None:
        if not is_emoji(v):
            _fail(t, "emoji", "emoji must be one emoji or a known :shortcode:")
        emoji = v
    return Reaction(message_id, emoji, added)


def _add_reaction(d: _Fields) -> Reaction:
    return _reaction(d, "add_reaction", True)


def _remove_reaction(d: _Fields) -> Reaction:
    return _reaction(d, "remove_reaction", False)


def _get_thread(d: _Fields) -> GetThread:
    t = "get_thread"
    return GetThread(_id(d, t, "messageId"), _limit(d, t), _seq(d, t, "before"))


def parse_search(d: _Fields) -> Search:
    """A ``search`` request's fields (also those of ``GET /api/chat/search``) as a command."""
    t = "search"
    query = d.get("query")
    if type(query) is not str:
        _fail(t, "query", "query is required" if query is None else "query must be a string")
    if len(query) > MAX_QUERY_CHARS:
        _fail(t, "query", f"query is too long (max {MAX_QUERY_CHARS} characters)")
    limit = _opt_int(d, t, "limit", 1, MAX_SEARCH_LIMIT)
    return Search(
        query,
        _opt_id(d, t, "roomId"),
        DEFAULT_SEARCH_LIMIT if limit is None else limit,
        _opt_id(d, t, "before"),
    )


_PING = Ping()


def _ping(d: _Fields) -> Ping:
    return _PING


_PARSERS: dict[str, Callable[[_Fields], Command]] = {
    "authenticate": _authenticate,
    "join_room": _join_room,
    "leave_room": _leave_room,
    "send_message": _send_message,
    "edit_message": _edit_message,
    "delete_message": _delete_message,
    "get_room_history": _get_room_history,
    "typing_start": _typing_start,
    "typing_stop": _typing_stop,
    "private_message": _private_message,
    "get_private_history": _get_private_history,
    "create_room": _create_room,
    "invite_to_room": _invite_to_room,
    "kick_user": _kick_user,
    "mute_user": _mute_user,
    "ban_user": _ban_user,
    "unban_user": _unban_user,
    "set_role": _set_role,
    "mark_read": _mark_read,
    "add_reaction": _add_reaction,
    "remove_reaction": _remove_reaction,
    "get_thread": _get_thread,
    "search": parse_search,
    "ping": _ping,
}

COMMAND_TYPES = frozenset(_PARSERS)
"""Every client-to-server wire type that :func:`parse` accepts."""


def parse(data: bytes | bytearray | memoryview | str) -> Command:
    """Decode one client frame into its command, or raise a :class:`ChatError` subclass.

    ``InvalidJson`` for bad JSON or a non-object, ``UnknownType`` for a missing or unknown
    ``type``, ``ValidationError`` (with ``request_type`` and ``field``) for bad fields.
    """
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidJson("Invalid JSON") from None
    if type(d) is not dict:
        raise InvalidJson("Message must be a JSON object")
    t = d.get("type")
    parser = _PARSERS.get(t) if type(t) is str else None
    if parser is None:
        raise _unknown_type(t)
    return parser(d)


def parse_fields(request_type: str, fields: object) -> Command:
    """The command ``request_type`` from already decoded fields (an HTTP body that takes
    the same fields as the WebSocket command, as the admin API does)."""
    if type(fields) is not dict:
        raise ValidationError("Request body must be a JSON object", request_type=request_type)
    return _PARSERS[request_type](fields)


def _unknown_type(t: object) -> UnknownType:
    if t is None:
        return UnknownType("Message type is required")
    if type(t) is not str:
        return UnknownType("Message type must be a string")
    shown = t if len(t) <= MAX_ID_CHARS else t[:MAX_ID_CHARS] + "…"
    return UnknownType(f"Unknown message type: {shown}")


# --- encoding -------------------------------------------------------------------------------


def event(type_: str, data: dict[str, Any]) -> bytes:
    """Encode one server-to-client event ``{"type": type_, "data": data}``."""
    return orjson.dumps({"type": type_, "data": data})


def message_json(
    message_id: str,
    seq: int,
    room_id: str,
    user_id: str,
    username: str,
    avatar_url: str | None,
    content: str,
    message_type: str,
    reply_to: str | None,
    client_id: str | None,
    timestamp: str,
    edited: bool,
    reply_count: int = 0,
    reactions: list[dict[str, Any]] | tuple[()] = (),
    mentions: list[str] | tuple[()] = (),
    mentions_room: bool = False,
) -> dict[str, Any]:
    """A room message as events carry it (``attachment`` and ``deleted`` are added apart).

    ``replyCount``, ``reactions``, ``mentions`` and ``mentionsRoom`` are left out at their
    defaults (0, [], [], false): a plain message's frame is ~60 bytes smaller, which every
    recipient's copy pays (docs/protocol.md, "Message objects").
    """
    message: dict[str, Any] = {
        "id": message_id,
        "seq": seq,
        "roomId": room_id,
        "userId": user_id,
        "username": username,
        "avatar_url": avatar_url,
        "content": content,
        "messageType": message_type,
        "replyTo": reply_to,
        "clientId": client_id,
        "timestamp": timestamp,
        "edited": edited,
    }
    if reply_count:
        message["replyCount"] = reply_count
    if reactions:
        message["reactions"] = reactions
    if mentions:  # inline, not with_mentions(): this runs for every message sent
        message["mentions"] = mentions
    if mentions_room:
        message["mentionsRoom"] = True
    return message


def with_mentions(
    message: dict[str, Any], mentions: list[str], mentions_room: bool
) -> dict[str, Any]:
    """A copy of a room message object with these mentions (left out at their defaults)."""
    copy = {k: v for k, v in message.items() if k != "mentions" and k != "mentionsRoom"}
    if mentions:
        copy["mentions"] = mentions
    if mentions_room:
        copy["mentionsRoom"] = True
    return copy


def attachment_json(file_id: str, name: str, size: int, content_type: str) -> dict[str, Any]:
    """An uploaded file as messages and the upload reply carry it."""
    return {
        "id": file_id,
        "name": name,
        "size": size,
        "contentType": content_type,
        "url": f"/api/chat/files/{file_id}",
    }


def error_event(err: ChatError) -> bytes:
    """Encode ``err`` as an ``error`` event; ``type`` names the request when known."""
    data: dict[str, Any] = {"message": err.message, "code": err.code}
    if err.request_type is not None:
        data["type"] = err.request_type
    if isinstance(err, RateLimited):
        data["retryAfter"] = round(err.retry_after, 3)
    return orjson.dumps({"type": "error", "data": data})
