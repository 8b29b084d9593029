"""Roles and moderation end to end: kick, mute, ban, unban, set_role, deletes and the audit log.

Admin and moderator accounts are made with the CLI before they first log in (the server
caches accounts once seen). Every action is tried by a role allowed to take it and by one
that is not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, create_account, register
from tests.support.client import ChatClient
from tests.support.server import ServerProcess

BANNED = 4003


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """One HTTP client to the ``server`` fixture's server (creating clients is slow)."""
    with httpx.Client(base_url=server.base_url) as client:
        yield client


def login(http: httpx.Client, name: str) -> httpx.Response:
    return http.post("/api/auth/login", json={"username": name, "password": PASSWORD})


class Member:
    """A logged-in account with one WebSocket connection."""

    def __init__(self, user: dict[str, Any], token: str, client: ChatClient):
        self.id: str = user["id"]
        self.name: str = user["username"]
        self.role: str = user["role"]
        self.token = token
        self.ws = client

    @classmethod
    async def log_in(
        cls, server: ServerProcess, http: httpx.Client, name: str, room: str | None = "general"
    ) -> Member:
        response = login(http, name)
        assert response.status_code == 200, response.text
        body = response.json()
        return cls(body["user"], body["token"], await connect(server, body["token"], room))

    def send(self, **fields: Any) -> None:
        self.ws.send(**fields)

    async def post(self, room: str, content: str) -> str:
        """Send a message and wait until it is stored; its id."""
        client_id = uuid.uuid4().hex
        self.ws.send(type="send_message", roomId=room, content=content, clientId=client_id)
        return (await self.ws.expect("message_ack", clientId=client_id))["messageId"]

    async def refused(self, code: str = "forbidden", **fields: Any) -> dict[str, Any]:
        """Send ``fields`` and expect an error of ``code`` for that request type."""
        self.ws.send(**fields)
        error = await self.ws.expect_error(code)
        assert error["type"] == fields["type"]
        return error

    async def done(self, **fields: Any) -> dict[str, Any]:
        """Send a moderation action and wait for its confirmation."""
        self.ws.send(**fields)
        return await self.ws.expect("moderation_done", action=fields["type"].split("_")[0])


async def connect(server: ServerProcess, token: str, room: str | None = "general") -> ChatClient:
    client = await ChatClient.connect(server.ws_url, token)
    if room is not None:
        client.send(type="join_room", roomId=room)
        await client.expect("room_joined", roomId=room)
    return client


async def test_users_and_moderators_cannot_exceed_their_role(server, http):
    admin = await Member.log_in(server, http, create_account(server, "admin"))
    mod = await Member.log_in(server, http, create_account(server, "moderator"))
    alice = await Member.log_in(server, http, register(http)["user"]["username"])
    bob = await Member.log_in(server, http, register(http)["user"]["username"])
    assert (admin.role, mod.role, alice.role) == ("admin", "moderator", "user")
    bobs = await bob.post("general", "hello from bob")
    admins = await admin.post("general", "hello from the admin")

    # a plain user: nothing
    for action in (
        {"type": "kick_user", "roomId": "general", "userId": bob.id},
        {"type": "mute_user", "roomId": "general", "userId": bob.id, "durationSeconds": 60},
        {"type": "ban_user", "userId": bob.id},
        {"type": "unban_user", "userId": bob.id},
        {"type": "set_role", "userId": alice.id, "role": "admin"},
        {"type": "delete_message", "messageId": bobs},
    ):
        await alice.refused(**action)

    # a moderator: never on an admin, and no bans or roles at all
    for action in (
        {"type": "kick_user", "roomId": "general", "userId": admin.id},
        {"type": "mute_user", "roomId": "general", "userId": admin.id, "durationSeconds": 60},
        {"type": "delete_message", "messageId": admins},
        {"type": "ban_user", "userId": bob.id, "reason": "spam"},
        {"type": "unban_user", "userId": bob.id},
        {"type": "set_role", "userId": bob.id, "role": "moderator"},
    ):
        await mod.refused(**action)
    await mod.refused("validation", type="kick_user", roomId="general", userId=mod.id)
    await mod.refused("not_found", type="kick_user", roomId="general", userId="nobody")

    # ... but any message and any user below them
    mod.send(type="delete_message", messageId=bobs)
    deleted = await alice.ws.expect("message_deleted")
    assert deleted == {"messageId": bobs, "roomId": "general"}
    await mod.done(type="kick_user", roomId="general", userId=bob.id, reason="off topic")
    kicked = await bob.ws.expect("kicked")
    assert kicked["roomId"] == "general" and kicked["reason"] == "off topic"
    assert kicked["by"]["id"] == mod.id
    left = await alice.ws.expect("user_left", roomId="general")
    assert left["user"]["id"] == bob.id
    await bob.refused(
        "not_member", type="send_message", roomId="general", content="am I still here?"
    )
    # admins act on anyone, moderators included
    await admin.done(type="kick_user", roomId="general", userId=mod.id)
    await mod.ws.expect("kicked", roomId="general")
    await admin.post("general", "barrier: everything before is stored")

    # the audit log holds exactly the actions that were allowed
    entries = http.get(
        "/api/admin/audit", headers={"Authorization": f"Bearer {admin.token}"}
    ).json()["entries"]
    assert [(e["action"], e["actorId"], e["targetUserId"]) for e in entries] == [
        ("kick", admin.id, mod.id),
        ("kick", mod.id, bob.id),
        ("delete_message", mod.id, bob.id),
    ]
    assert entries[1]["reason"] == "off topic" and entries[1]["roomId"] == "general"
    assert entries[2]["detail"] == {"messageId": bobs}
    assert all(e["at"].endswith("Z") for e in entries)
    for who in (alice, mod):
        refused = http.get("/api/admin/audit", headers={"Authorization": f"Bearer {who.token}"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert http.get("/api/admin/audit").status_code == 401

    printed = server.cli("audit")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 3
    assert lines[1].split()[1] == "kick"
    assert f"actor={mod.id}" in lines[1] and f"target={bob.id}" in lines[1]
    assert "room=general" in lines[1] and "reason=off topic" in lines[1]
    assert lines[2].split()[1] == "delete_message" and bobs in lines[2]
    for member in (admin, mod, alice, bob):
        await member.ws.close()


async def test_room_owner_moderates_in_own_room_only(server, http):
    mod = await Member.log_in(server, http, create_account(server, "moderator"))
    owner = await Member.log_in(server, http, register(http)["user"]["username"])
    alice = await Member.log_in(server, http, register(http)["user"]["username"])
    owner.send(type="create_room", name="owners club", isPrivate=True)
    club = (await owner.ws.expect("room_created"))["room"]["id"]
    for member in (owner, alice, mod):
        if member is not owner:
            owner.send(type="invite_to_room", roomId=club, userId=member.id)
            await member.ws.expect("room_invited")
        member.send(type="join_room", roomId=club)
        await member.ws.expect("room_joined", roomId=club)
    alices = await alice.post(club, "my message")
    mods = await mod.post(club, "moderator here")

    # not in someone else's room, and never on a moderator
    await owner.refused(type="kick_user", roomId="general", userId=alice.id)
    await owner.refused(type="kick_user", roomId=club, userId=mod.id)
    await owner.refused(type="mute_user", roomId=club, userId=mod.id, durationSeconds=60)
    await owner.refused(type="delete_message", messageId=mods)
    await alice.refused(type="kick_user", roomId=club, userId=owner.id)

    owner.send(type="delete_message", messageId=alices)
    await alice.ws.expect("message_deleted", messageId=alices)
    await owner.done(type="mute_user", roomId=club, userId=alice.id, durationSeconds=60)
    await alice.ws.expect("muted", roomId=club)
    await owner.done(type="kick_user", roomId=club, userId=alice.id, reason="bye")
    assert (await alice.ws.expect("kicked", roomId=club))["reason"] == "bye"
    await mod.ws.expect("user_left", roomId=club)
    # a kicked member of a private room is no longer a member: the room is gone for them
    await alice.refused("not_found", type="join_room", roomId=club)
    for member in (mod, owner, alice):
        await member.ws.close()


async def test_mute_expires_and_set_role_grants_and_revokes(server, http):
    admin = await Member.log_in(server, http, create_account(server, "admin"))
    alice = await Member.log_in(server, http, register(http)["user"]["username"])
    bob = await Member.log_in(server, http, register(http)["user"]["username"])

    await alice.refused(type="mute_user", roomId="general", userId=bob.id, durationSeconds=1)
    admin.send(type="set_role", userId=alice.id, role="moderator")
    changed = await alice.ws.expect("role_changed")
    assert changed == {"userId": alice.id, "role": "moderator"}
    assert await admin.ws.expect("role_changed") == changed
    assert login(http, alice.name).json()["user"]["role"] == "moderator"

    # the new role's powers work at once, on the same connection
    await alice.done(type="mute_user", roomId="general", userId=bob.id, durationSeconds=1)
    until = (await bob.ws.expect("muted", roomId="general"))["until"]
    assert time.time() < until <= time.time() + 1.5
    await bob.refused("muted", type="send_message", roomId="general", content="let me speak")
    bob.send(type="join_room", roomId="random")
    await bob.ws.expect("room_joined", roomId="random")
    await bob.post("random", "the mute is per room")
    await asyncio.sleep(max(0.0, until - time.time()) + 0.05)  # the mute runs out by the clock
    await bob.post("general", "free again")

    admin.send(type="set_role", userId=alice.id, role="user")
    await alice.ws.expect("role_changed", role="user")
    await alice.refused(type="kick_user", roomId="general", userId=bob.id)
    await admin.post("general", "barrier")

    printed = server.cli("audit")
    assert printed.returncode == 0, printed.stderr
    actions = [line.split()[1] for line in printed.stdout.splitlines()]
    assert actions == ["set_role", "mute", "set_role"]  # newest first
    assert f"target={bob.id}" in printed.stdout.splitlines()[1]
    assert '{"durationSeconds":1}' in printed.stdout.splitlines()[1]
    for member in (admin, alice, bob):
        await member.ws.close()


async def test_a_muted_user_cannot_edit_old_messages_either(server, http):
    admin = await Member.log_in(server, http, create_account(server, "admin"))
    bob = await Member.log_in(server, http, register(http)["user"]["username"])
    bobs = await bob.post("general", "said before the mute")
    await admin.done(type="mute_user", roomId="general", userId=bob.id, durationSeconds=60)
    await bob.ws.expect("muted", roomId="general")
    await bob.refused("muted", type="edit_message", messageId=bobs, content="said anyway")
    admin.send(type="get_room_history", roomId="general")
    history = await admin.ws.expect("room_history", roomId="general")
    assert [m["content"] for m in history["messages"] if m["id"] == bobs] == [
        "said before the mute"
    ]
    bob.send(type="delete_message", messageId=bobs)  # taking one's words back is allowed
    await bob.ws.expect("delete_ack", messageId=bobs)


async def test_ban_closes_connections_refuses_logins_until_unbanned(server, http):
    admin = await Member.log_in(server, http, create_account(server, "admin"))
    alice = await Member.log_in(server, http, register(http)["user"]["username"])
    second_tab = await connect(server, alice.token, room=None)
    bob = await Member.log_in(server, http, register(http)["user"]["username"])

    await admin.refused("validation", type="ban_user", userId=admin.id)
    await admin.done(type="ban_user", userId=alice.id, reason="abuse")
    for conn in (alice.ws, second_tab):
        assert await conn.expect("banned") == {"reason": "abuse", "until": None}
        assert await conn.closed() == BANNED
    refused = login(http, alice.name)
    assert refused.status_code == 403 and refused.json()["code"] == "banned"
    me = http.get("/api/auth/me", headers={"Authorization": f"Bearer {alice.token}"})
    assert me.status_code == 403 and me.json()["code"] == "banned"
    retry = await ChatClient.connect(server.ws_url)
    retry.send(type="authenticate", token=alice.token)
    await retry.expect_error("banned")
    assert await retry.closed() == BANNED

    await admin.done(type="ban_user", userId=bob.id, reason="cool off", durationSeconds=1)
    bobs_ban = await bob.ws.expect("banned")
    assert bobs_ban["reason"] == "cool off"
    assert time.time() < bobs_ban["until"] <= time.time() + 1.5
    assert await bob.ws.closed() == BANNED
    assert login(http, bob.name).status_code == 403

    await admin.done(type="unban_user", userId=alice.id)
    back = await Member.log_in(server, http, alice.name)
    await back.post("general", "I am back")
    old_token = http.get("/api/auth/me", headers={"Authorization": f"Bearer {alice.token}"})
    assert old_token.status_code == 200

    await asyncio.sleep(max(0.0, bobs_ban["until"] - time.time()) + 0.05)
    assert login(http, bob.name).status_code == 200
    await admin.post("general", "barrier")
    entries = http.get(
        "/api/admin/audit", headers={"Authorization": f"Bearer {admin.token}"}
    ).json()["entries"]
    assert [(e["action"], e["targetUserId"], e["reason"]) for e in entries] == [
        ("unban", alice.id, None),
        ("ban", bob.id, "cool off"),
        ("ban", alice.id, "abuse"),
    ]
    assert entries[1]["detail"] == {"durationSeconds": 1}
    assert all(e["actorId"] == admin.id for e in entries)
    for conn in (admin.ws, back.ws):
        await conn.close()
