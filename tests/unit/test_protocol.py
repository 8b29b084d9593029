"""Tests for fastchat.protocol: parsing, validation errors, encoding, timestamps.

Cost of the hot path on the dev box (timeit, best of 7 x 300k runs):
parse(b'{"type":"send_message","roomId":"<uuid>","content":"hello there","clientId":"c-1"}')
takes about 2.8 µs: orjson.loads 0.6 µs, validation 0.6 µs, and the frozen dataclass
__init__ (one object.__setattr__ per field) 1.1 µs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat import clock
from fastchat import protocol as p
from fastchat.errors import ChatError, InvalidJson, UnknownType, ValidationError
from fastchat.names import BLANK

RID = "5b1a6c1e-6f0e-4e57-9a57-1a2b3c4d5e6f"
UID = "0c7d2a4e-1111-4e57-9a57-aaaaaaaaaaaa"
MID = "9f9f9f9f-2222-4e57-9a57-bbbbbbbbbbbb"
LONG_ID = "x" * 65


def enc(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- valid messages -------------------------------------------------------------------------

VALID: list[tuple[dict[str, Any], p.Command]] = [
    ({"type": "authenticate", "token": "a.b.c"}, p.Authenticate("a.b.c")),
    ({"type": "join_room", "roomId": RID}, p.JoinRoom(RID, None)),
    ({"type": "join_room", "roomId": RID, "since": 0}, p.JoinRoom(RID, 0)),
    ({"type": "join_room", "roomId": RID, "since": 41}, p.JoinRoom(RID, 41)),
    ({"type": "join_room", "roomId": RID, "since": None}, p.JoinRoom(RID, None)),
    ({"type": "leave_room", "roomId": RID}, p.LeaveRoom(RID)),
    (
        {"type": "send_message", "roomId": RID, "content": "hi"},
        p.SendMessage(RID, "hi", "text", None, None, None),
    ),
    (
        {
            "type": "send_message",
            "roomId": RID,
            "content": "  look \x00 ünïcødé 😀  ",
            "messageType": "image",
            "replyTo": MID,
            "clientId": "c" * 64,
            "fileId": "f1",
            "extra": {"ignored": True},
        },
        p.SendMessage(RID, "  look \x00 ünïcødé 😀  ", "image", MID, "c" * 64, "f1"),
    ),
    (
        {
            "type": "send_message",
            "roomId": RID,
            "content": "doc",
            "messageType": "file",
            "fileId": "f2",
            "replyTo": None,
            "clientId": None,
        },
        p.SendMessage(RID, "doc", "file", None, None, "f2"),
    ),
    (
        {"type": "send_message", "roomId": RID, "content": "x" * 2000, "messageType": "text"},
        p.SendMessage(RID, "x" * 2000),
    ),
    # 2000 characters even though it is 8000 bytes of UTF-8.
    (
        {"type": "send_message", "roomId": RID, "content": "😀" * 2000},
        p.SendMessage(RID, "😀" * 2000),
    ),
    ({"type": "edit_message", "messageId": MID, "content": "fixed"}, p.EditMessage(MID, "fixed")),
    ({"type": "delete_message", "messageId": MID}, p.DeleteMessage(MID)),
    ({"type": "get_room_history", "roomId": RID}, p.GetRoomHistory(RID, 50, None, None)),
    (
        {"type": "get_room_history", "roomId": RID, "limit": 200, "before": 10, "after": 2},
        p.GetRoomHistory(RID, 200, 10, 2),
    ),
    (
        {"type": "get_room_history", "roomId": RID, "limit": 1, "before": 0},
        p.GetRoomHistory(RID, 1, 0, None),
    ),
    ({"type": "typing_start", "roomId": RID}, p.Typing(RID, True)),
    ({"type": "typing_stop", "roomId": RID}, p.Typing(RID, False)),
    (
        {"type": "private_message", "targetUserId": UID, "content": "psst"},
        p.PrivateMessage(UID, "psst", None),
    ),
    (
        {"type": "private_message", "targetUserId": UID, "content": "psst", "clientId": "k1"},
        p.PrivateMessage(UID, "psst", "k1"),
    ),
    ({"type": "get_private_history", "userId": UID}, p.GetPrivateHistory(UID, 50, None)),
    (
        {"type": "get_private_history", "userId": UID, "limit": 7, "before": 99},
        p.GetPrivateHistory(UID, 7, 99),
    ),
    ({"type": "create_room", "name": "general"}, p.CreateRoom("general", "", False)),
    (
        {
            "type": "create_room",
            "name": "  Team " + "n" * 58 + " ",
            "description": "d" * 256,
            "isPrivate": True,
        },
        p.CreateRoom("Team " + "n" * 58, "d" * 256, True),
    ),
    (
        {"type": "create_room", "name": "r", "description": None, "isPrivate": None},
        p.CreateRoom("r", "", False),
    ),
    ({"type": "invite_to_room", "roomId": RID, "userId": UID}, p.InviteToRoom(RID, UID)),
    ({"type": "kick_user", "roomId": RID, "userId": UID}, p.KickUser(RID, UID, None)),
    (
        {"type": "kick_user", "roomId": RID, "userId": UID, "reason": "r" * 256},
        p.KickUser(RID, UID, "r" * 256),
    ),
    (
        {"type": "mute_user", "roomId": RID, "userId": UID, "durationSeconds": 1},
        p.MuteUser(RID, UID, 1),
    ),
    (
        {"type": "mute_user", "roomId": RID, "userId": UID, "durationSeconds": 31_536_000},
        p.MuteUser(RID, UID, 31_536_000),
    ),
    ({"type": "ban_user", "userId": UID}, p.BanUser(UID, None, None)),
    (
        {"type": "ban_user", "userId": UID, "reason": "spam", "durationSeconds": 3600},
        p.BanUser(UID, "spam", 3600),
    ),
    ({"type": "unban_user", "userId": UID}, p.UnbanUser(UID)),
    ({"type": "set_role", "userId": UID, "role": "moderator"}, p.SetRole(UID, "moderator")),
    ({"type": "set_role", "userId": UID, "role": "user"}, p.SetRole(UID, "user")),
    ({"type": "set_role", "userId": UID, "role": "admin"}, p.SetRole(UID, "admin")),
    ({"type": "mark_read", "roomId": RID, "seq": 0}, p.MarkRead(RID, None, 0)),
    ({"type": "mark_read", "userId": UID, "seq": 9}, p.MarkRead(None, UID, 9)),
    (
        {"type": "add_reaction", "messageId": MID, "emoji": ":thumbsup:"},
        p.Reaction(MID, "\U0001f44d", True),
    ),
    (
        {"type": "remove_reaction", "messageId": MID, "emoji": "\U0001f1eb\U0001f1f7"},
        p.Reaction(MID, "\U0001f1eb\U0001f1f7", False),
    ),
    ({"type": "get_thread", "messageId": MID}, p.GetThread(MID, 50, None)),
    ({"type": "get_thread", "messageId": MID, "limit": 5, "before": 9}, p.GetThread(MID, 5, 9)),
    ({"type": "search", "query": "zebra"}, p.Search("zebra", None, 20, None)),
    (
        {"type": "search", "query": "a b", "roomId": RID, "limit": 50, "before": MID},
        p.Search("a b", RID, 50, MID),
    ),
    ({"type": "ping"}, p.Ping()),
    ({"type": "ping", "timestamp": 123}, p.Ping()),
]


@pytest.mark.parametrize(("msg", "expected"), VALID, ids=lambda v: getattr(v, "TYPE", None))
def test_parse_valid(msg: dict[str, Any], expected: p.Command) -> None:
    cmd = p.parse(enc(msg))
    assert cmd == expected
    assert type(cmd) is type(expected)
    assert msg["type"] == cmd.TYPE


def test_parse_accepts_str_bytes_and_buffers() -> None:
    msg = '{"type":"leave_room","roomId":"r1"}'
    raw = msg.encode()
    parsed = [p.parse(msg), p.parse(raw), p.parse(bytearray(raw)), p.parse(memoryview(raw))]
    assert parsed == [p.LeaveRoom("r1")] * 4


def test_every_wire_type_is_covered_by_valid_table() -> None:
    assert {msg["type"] for msg, _ in VALID} == p.COMMAND_TYPES
    assert len(p.COMMAND_TYPES) == 24


def test_commands_are_slotted() -> None:
    cmd = p.parse(enc({"type": "leave_room", "roomId": RID}))
    with pytest.raises(AttributeError):
        cmd.not_a_field = "other"  # type: ignore[attr-defined]


# --- invalid fields -------------------------------------------------------------------------

# Minimal valid message per type with its required id-like fields.
BASE: dict[str, dict[str, Any]] = {
    "join_room": {"roomId": RID},
    "leave_room": {"roomId": RID},
    "send_message": {"roomId": RID, "content": "hi"},
    "edit_message": {"messageId": MID, "content": "hi"},
    "delete_message": {"messageId": MID},
    "get_room_history": {"roomId": RID},
    "typing_start": {"roomId": RID},
    "typing_stop": {"roomId": RID},
    "private_message": {"targetUserId": UID, "content": "hi"},
    "get_private_history": {"userId": UID},
    "invite_to_room": {"roomId": RID, "userId": UID},
    "kick_user": {"roomId": RID, "userId": UID},
    "mute_user": {"roomId": RID, "userId": UID, "durationSeconds": 60},
    "ban_user": {"userId": UID},
    "unban_user": {"userId": UID},
    "set_role": {"userId": UID, "role": "user"},
    "add_reaction": {"messageId": MID, "emoji": "\U0001f44d"},
    "remove_reaction": {"messageId": MID, "emoji": "\U0001f44d"},
    "get_thread": {"messageId": MID},
    "search": {"query": "zebra"},
}

ID_FIELDS = [
    (t, key)
    for t, fields in BASE.items()
    for key in fields
    if key in {"roomId", "messageId", "userId", "targetUserId"}
]
OPTIONAL_ID_FIELDS = [
    ("send_message", "replyTo"),
    ("send_message", "clientId"),
    ("private_message", "clientId"),
]

# (request type, field, bad value or MISSING, expected message)
MISSING = object()
ID_CASES = [
    case
    for t, key in ID_FIELDS
    for case in [
        (t, key, MISSING, f"{key} is required"),
        (t, key, None, f"{key} is required"),
        (t, key, 5, f"{key} must be a string"),
        (t, key, True, f"{key} must be a string"),
        (t, key, [RID], f"{key} must be a string"),
        (t, key, "", f"{key} must not be empty"),
        (t, key, LONG_ID, f"{key} is too long (max 64 characters)"),
    ]
] + [
    case
    for t, key in OPTIONAL_ID_FIELDS
    for case in [
        (t, key, 5, f"{key} must be a string"),
        (t, key, "", f"{key} must not be empty"),
        (t, key, LONG_ID, f"{key} is too long (max 64 characters)"),
    ]
]

CONTENT_CASES = [
    case
    for t in ("send_message", "edit_message", "private_message")
    for case in [
        (t, "content", MISSING, "content is required"),
        (t, "content", None, "content is required"),
        (t, "content", 42, "content must be a string"),
        (t, "content", {"text": "hi"}, "content must be a string"),
        (t, "content", "", "Message content cannot be empty"),
        (t, "content", " \t\n\u3000 ", "Message content cannot be empty"),
        (t, "content", "x" * 2001, "Message too long (max 2000 characters)"),
        (t, "content", "😀" * 2001, "Message too long (max 2000 characters)"),
    ]
]

INT_CASES = [
    ("join_room", "since", -1, "since must be between 0 and 9223372036854775807"),
    ("join_room", "since", 2**63, "since must be between 0 and 9223372036854775807"),
    ("join_room", "since", "3", "since must be an integer"),
    ("join_room", "since", 3.0, "since must be an integer"),
    ("join_room", "since", False, "since must be an integer"),
    ("get_room_history", "limit", 0, "limit must be between 1 and 200"),
    ("get_room_history", "limit", 201, "limit must be between 1 and 200"),
    ("get_room_history", "limit", "x", "limit must be an integer"),
    ("get_room_history", "limit", True, "limit must be an integer"),
    ("get_room_history", "limit", 10.5, "limit must be an integer"),
    ("get_room_history", "before", -5, "before must be between 0 and 9223372036854775807"),
    ("get_room_history", "after", "1", "after must be an integer"),
    ("get_private_history", "limit", 500, "limit must be between 1 and 200"),
    ("get_private_history", "before", [1], "before must be an integer"),
    ("mute_user", "durationSeconds", MISSING, "durationSeconds is required"),
    ("mute_user", "durationSeconds", None, "durationSeconds is required"),
    ("mute_user", "durationSeconds", 0, "durationSeconds must be between 1 and 31536000"),
    ("mute_user", "durationSeconds", 31_536_001, "durationSeconds must be between 1 and 31536000"),
    ("mute_user", "durationSeconds", "60", "durationSeconds must be an integer"),
    ("ban_user", "durationSeconds", -1, "durationSeconds must be between 1 and 31536000"),
    ("ban_user", "durationSeconds", True, "durationSeconds must be an integer"),
]

OTHER_CASES = [
    ("authenticate", "token", MISSING, "token is required"),
    ("authenticate", "token", "", "token must be a non-empty string"),
    ("authenticate", "token", 123, "token must be a non-empty string"),
    ("send_message", "messageType", "system", "messageType must be one of: text, image, file"),
    ("send_message", "messageType", "TEXT", "messageType must be one of: text, image, file"),
    ("send_message", "messageType", ["text"], "messageType must be one of: text, image, file"),
    ("send_message", "messageType", 1, "messageType must be one of: text, image, file"),
    ("send_message", "fileId", "f1", "fileId is only allowed for image and file messages"),
    ("private_message", "messageType", "system", "messageType must be one of: text, image, file"),
    ("private_message", "messageType", 1, "messageType must be one of: text, image, file"),
    ("private_message", "fileId", "f1", "fileId is only allowed for image and file messages"),
    ("private_message", "fileId", 7, "fileId must be a string"),
    ("create_room", "name", MISSING, "name is required"),
    ("create_room", "name", 7, "name must be a string"),
    ("create_room", "name", "   ", "name must not be empty"),
    ("create_room", "name", "n" * 65, "name is too long (max 64 characters)"),
    ("create_room", "description", 1, "description must be a string"),
    ("create_room", "description", "d" * 257, "description is too long (max 256 characters)"),
    ("create_room", "isPrivate", 1, "isPrivate must be true or false"),
    ("create_room", "isPrivate", "true", "isPrivate must be true or false"),
    ("kick_user", "reason", "r" * 257, "reason is too long (max 256 characters)"),
    ("kick_user", "reason", False, "reason must be a string"),
    ("ban_user", "reason", "r" * 257, "reason is too long (max 256 characters)"),
    ("set_role", "role", MISSING, "role is required"),
    ("set_role", "role", "owner", "role must be one of: user, moderator, admin"),
    ("set_role", "role", "Admin", "role must be one of: user, moderator, admin"),
    ("set_role", "role", {"r": 1}, "role must be one of: user, moderator, admin"),
]


def _with(t: str, key: str, value: Any) -> dict[str, Any]:
    msg = {"type": t, **BASE.get(t, {"name": "room"})}
    if value is MISSING:
        msg.pop(key, None)
    else:
        msg[key] = value
    return msg


@pytest.mark.parametrize(
    ("t", "key", "value", "message"),
    ID_CASES + CONTENT_CASES + INT_CASES + OTHER_CASES,
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_parse_invalid_field(t: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        p.parse(enc(_with(t, key, value)))
    err = info.value
    assert err.code == "validation"
    assert err.request_type == t
    assert err.field == key
    assert err.message == message


def test_base_messages_are_valid() -> None:
    # Guards the invalid-field table: each failure above is caused by the one changed field.
    for t in BASE:
        assert t == p.parse(enc(_with(t, "unused", MISSING))).TYPE
    assert p.parse(enc(_with("create_room", "unused", MISSING))) == p.CreateRoom("room")


@pytest.mark.parametrize("t", ["send_message", "private_message"])
@pytest.mark.parametrize("message_type", ["image", "file"])
@pytest.mark.parametrize("file_id", [MISSING, None])
def test_image_and_file_messages_need_file_id(t: str, message_type: str, file_id: Any) -> None:
    msg = _with(t, "fileId", file_id)
    msg["messageType"] = message_type
    with pytest.raises(ValidationError) as info:
        p.parse(enc(msg))
    assert info.value.field == "fileId"
    assert info.value.message == f"fileId is required for {message_type} messages"


def test_first_bad_field_is_reported_in_field_order() -> None:
    with pytest.raises(ValidationError) as info:
        p.parse(enc({"type": "send_message", "roomId": 1, "content": ""}))
    assert info.value.field == "roomId"


# --- envelope errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"{",
        b'{"type": "ping",}',
        b"\xff\xfe",
        b'"\\ud800"',
        b"[" * 2000,
        b"NaN",
        '{"type": "ping", "x": "\ud800"}',
    ],
)
def test_invalid_json(data: bytes | str) -> None:
    with pytest.raises(InvalidJson) as info:
        p.parse(data)
    assert info.value.code == "invalid_json"
    assert info.value.message == "Invalid JSON"
    assert info.value.request_type is None


@pytest.mark.parametrize("data", [b"[]", b'["ping"]', b"1", b'"ping"', b"null", b"true"])
def test_non_object_json(data: bytes) -> None:
    with pytest.raises(InvalidJson) as info:
        p.parse(data)
    assert info.value.message == "Message must be a JSON object"


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        ({}, "Message type is required"),
        ({"type": None}, "Message type is required"),
        ({"type": 3}, "Message type must be a string"),
        ({"type": ["ping"]}, "Message type must be a string"),
        ({"type": {"a": 1}}, "Message type must be a string"),
        ({"type": "pong"}, "Unknown message type: pong"),
        ({"type": "PING"}, "Unknown message type: PING"),
        ({"type": "__class__"}, "Unknown message type: __class__"),
        ({"type": "z" * 100}, "Unknown message type: " + "z" * 64 + "…"),
    ],
)
def test_unknown_type(msg: dict[str, Any], message: str) -> None:
    with pytest.raises(UnknownType) as info:
        p.parse(enc(msg))
    assert info.value.code == "unknown_type"
    assert info.value.message == message


# --- hypothesis -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)

# Objects that look like real commands: known type, known field names, arbitrary values.
FIELD_NAMES = sorted(
    {k for fields in BASE.values() for k in fields}
    | {
        "token",
        "since",
        "limit",
        "before",
        "after",
        "messageType",
        "replyTo",
        "clientId",
        "fileId",
        "name",
        "description",
        "isPrivate",
        "reason",
        "seq",
        "emoji",
        "query",
    }
)
commandish = st.builds(
    lambda t, fields: {**fields, "type": t},
    st.sampled_from(sorted(p.COMMAND_TYPES)),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6),
)


def _parse_or_chat_error(data: bytes | str) -> p.Command | ChatError:
    try:
        return p.parse(data)
    except ChatError as err:
        return err


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_chat_errors(data: bytes) -> None:
    _parse_or_chat_error(data)


@given(json_values)
def test_arbitrary_json_only_raises_chat_errors(value: Any) -> None:
    _parse_or_chat_error(enc(value))


@given(commandish)
def test_commandish_objects_only_raise_chat_errors(msg: dict[str, Any]) -> None:
    result = _parse_or_chat_error(enc(msg))
    if isinstance(result, ChatError):
        # Every field error names the request and a real field, and encodes cleanly.
        assert isinstance(result, ValidationError)
        assert result.request_type == msg["type"]
        assert result.field in FIELD_NAMES
        assert orjson.loads(p.error_event(result))["data"]["type"] == msg["type"]
    else:
        assert msg["type"] == result.TYPE


ids = st.text(min_size=1, max_size=64)
contents = st.text(min_size=1, max_size=2000).filter(lambda s: s.strip(BLANK))


@pytest.mark.parametrize("t", ["send_message", "private_message"])
@given(
    destination=ids,
    content=contents,
    message_type=st.sampled_from(["text", "image", "file", None]),
    reply_to=st.none() | ids,
    client_id=st.none() | ids,
    file_id=ids,
)
def test_valid_messages_round_trip(
    t: str,
    destination: str,
    content: str,
    message_type: str | None,
    reply_to: str | None,
    client_id: str | None,
    file_id: str,
) -> None:
    key = "roomId" if t == "send_message" else "targetUserId"
    msg: dict[str, Any] = {"type": t, key: destination, "content": content}
    if message_type is not None:
        msg["messageType"] = message_type
    if message_type in ("image", "file"):
        msg["fileId"] = file_id
    if reply_to is not None:
        msg["replyTo"] = reply_to
    if client_id is not None:
        msg["clientId"] = client_id
    kind = message_type or "text"
    attached = file_id if message_type in ("image", "file") else None
    expected = (
        p.SendMessage(destination, content, kind, reply_to, client_id, attached)
        if t == "send_message"
        else p.PrivateMessage(destination, content, client_id, reply_to, kind, attached)
    )
    assert p.parse(enc(msg)) == expected


@given(
    message=st.text(),
    request_type=st.none() | st.text(max_size=64),
    cls=st.sampled_from([InvalidJson, UnknownType, ValidationError, ChatError]),
)
def test_error_event_parses_back(
    message: str, request_type: str | None, cls: type[ChatError]
) -> None:
    err = cls(message, request_type=request_type)
    decoded = orjson.loads(p.error_event(err))
    expected = {"message": message, "code": cls.code}
    if request_type is not None:
        expected["type"] = request_type
    assert decoded == {"type": "error", "data": expected}


# --- encoding -------------------------------------------------------------------------------


def test_error_event_from_parse_failure() -> None:
    with pytest.raises(ValidationError) as info:
        p.parse(enc({"type": "join_room"}))
    assert orjson.loads(p.error_event(info.value)) == {
        "type": "error",
        "data": {"message": "roomId is required", "code": "validation", "type": "join_room"},
    }


def test_error_event_without_request_type_has_no_type_key() -> None:
    decoded = orjson.loads(p.error_event(InvalidJson("Invalid JSON")))
    assert decoded == {"type": "error", "data": {"message": "Invalid JSON", "code": "invalid_json"}}


def test_event_shape() -> None:
    data = {"roomId": RID, "typing": True, "n": 3, "s": "ü"}
    raw = p.event("user_typing", data)
    assert isinstance(raw, bytes)
    assert orjson.loads(raw) == {"type": "user_typing", "data": data}
    assert raw.startswith(b'{"type":"user_typing","data":')


# --- timestamps -----------------------------------------------------------------------------

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_utc_now_iso_format_and_value() -> None:
    before = datetime.now(UTC)
    stamp = clock.utc_now_iso()
    after = datetime.now(UTC)
    assert ISO_MS.fullmatch(stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after


def test_utc_now_iso_is_exact_across_second_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(
        [
            1_795_637_478_123_456_789,  # 2026-11-25T20:11:18.123
            1_795_637_478_999_999_999,  # same second: cached prefix reused
            1_795_637_479_000_000_000,  # next second: prefix recomputed
            1_795_637_539_050_000_000,  # a minute later
        ]
    )
    monkeypatch.setattr(clock.time, "time_ns", lambda: next(ticks))
    assert [clock.utc_now_iso() for _ in range(4)] == [
        "2026-11-25T20:11:18.123Z",
        "2026-11-25T20:11:18.999Z",
        "2026-11-25T20:11:19.000Z",
        "2026-11-25T20:12:19.050Z",
    ]


@pytest.mark.parametrize("content", [None, ""])
@pytest.mark.parametrize(
    "destination",
    [
        {"type": "send_message", "roomId": "general"},
        {"type": "private_message", "targetUserId": UID},
    ],
)
def test_attachment_caption_is_optional(content, destination):
    fields = {**destination, "messageType": "file", "fileId": "f1"}
    if content is not None:
        fields["content"] = content
    cmd = p.parse(orjson.dumps(fields))
    assert cmd.content == "" and cmd.file_id == "f1" and cmd.message_type == "file"
    with pytest.raises(ValidationError):
        p.parse(orjson.dumps({**destination, "content": content}))


# --- issue 15: read markers, reactions, search ----------------------------------------------


@pytest.mark.parametrize(
    ("msg", "field", "message"),
    [
        ({"seq": 1}, "roomId", "exactly one of roomId and userId is required"),
        (
            {"roomId": RID, "userId": UID, "seq": 1},
            "roomId",
            "exactly one of roomId and userId is required",
        ),
        ({"roomId": RID}, "seq", "seq is required"),
        ({"roomId": RID, "seq": -1}, "seq", f"seq must be between 0 and {p.MAX_SEQ}"),
        ({"roomId": RID, "seq": True}, "seq", "seq must be an integer"),
    ],
)
def test_mark_read_needs_one_conversation_and_a_seq(
    msg: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        p.parse(enc({"type": "mark_read", **msg}))
    assert (info.value.field, info.value.message) == (field, message)


@pytest.mark.parametrize(
    "emoji",
    [
        "\U0001f44d",
        "\u2764\ufe0f",
        "\U0001f44d\U0001f3fd",
        "1\ufe0f\u20e3",
        "\U0001f1ef\U0001f1f5",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f3f3\ufe0f\u200d\U0001f308",
        "\u2705",
    ],
)
def test_single_emoji_are_accepted(emoji: str) -> None:
    assert p.is_emoji(emoji)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        ":)",
        "\U0001f44d\U0001f44d",
        "\U0001f3fd",
        "\U0001f44d\u200d",
        "\u200d\U0001f44d",
        "\U0001f1ef",
        "\U0001f1ef\U0001f1f5\U0001f1eb",
        "1",
        "\U0001f44d" + "\ufe0f" * 20,
        ":tada",
    ],
)
def test_non_emoji_are_refused(text: str) -> None:
    assert not p.is_emoji(text)
    with pytest.raises(ValidationError) as info:
        p.parse(enc({"type": "add_reaction", "messageId": MID, "emoji": text}))
    assert info.value.field == "emoji"


@given(st.text(max_size=20))
def test_is_emoji_never_fails_and_accepts_few_codepoints(text: str) -> None:
    if p.is_emoji(text):
        assert 1 <= len(text) <= 16 and not any(ch.isalpha() for ch in text)


def test_every_shortcode_stands_for_one_emoji() -> None:
    assert all(p.is_emoji(emoji) for emoji in p.SHORTCODES.values())


def test_search_query_length_is_capped() -> None:
    with pytest.raises(ValidationError) as info:
        p.parse(enc({"type": "search", "query": "q" * (p.MAX_QUERY_CHARS + 1)}))
    assert info.value.field == "query"


def test_message_objects_leave_default_values_out() -> None:
    args = ("m1", 1, "general", "u1", "alice", None, "hi", "text", None, None, "t", False)
    plain = p.message_json(*args)
    assert not {"replyCount", "reactions", "mentions", "mentionsRoom"} & plain.keys()
    assert plain["edited"] is False and plain["replyTo"] is None  # these stay
    reactions = [{"emoji": "👍", "count": 1, "userIds": ["u2"]}]
    full = p.message_json(*args, 2, reactions, ["u2"], True)
    assert (full["replyCount"], full["reactions"], full["mentions"], full["mentionsRoom"]) == (
        2,
        reactions,
        ["u2"],
        True,
    )
