"""Accounts on live connections end to end: access and refresh tokens, renewal on a socket,
expiry, logout, password changes, and changes made by the CLI (or by hand in the database)
reaching a running server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.accounts import PASSWORD, create_account, register
from tests.support.client import ChatClient
from tests.support.server import ServerProcess

AUTH_ENDED = 4001
BANNED = 4003


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(http: httpx.Client, name: str, password: str = PASSWORD) -> dict[str, Any]:
    response = http.post("/api/auth/login", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/api/auth/refresh", json={"refreshToken": refresh_token})


async def still_open(client: ChatClient) -> None:
    """The connection is open and authorized: a ping is answered."""
    client.send(type="ping")
    await client.expect("pong")


async def test_refresh_tokens_rotate_and_a_reused_one_revokes_its_session(server, http):
    account = register(http)
    assert account["token"] and account["refreshToken"]
    rotated = refresh(http, account["refreshToken"])
    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()
    assert pair["refreshToken"] != account["refreshToken"]
    assert http.get("/api/auth/me", headers=bearer(pair["token"])).status_code == 200
    socket = await ChatClient.connect(server.ws_url, pair["token"])

    # the spent token comes back (a thief's copy): the whole session ends
    reused = refresh(http, account["refreshToken"])
    assert reused.status_code == 401 and reused.json()["code"] == "invalid_token"
    assert refresh(http, pair["refreshToken"]).status_code == 401
    assert http.get("/api/auth/me", headers=bearer(pair["token"])).status_code == 401
    assert await socket.closed() == AUTH_ENDED

    # another device's session is untouched
    other = login(http, account["user"]["username"])
    assert refresh(http, other["refreshToken"]).status_code == 200
    for body in ({}, {"refreshToken": 7}, {"refreshToken": "x" * 5000}, {"refreshToken": "nope"}):
        bad = http.post("/api/auth/refresh", json=body)
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_token", body


async def test_logout_ends_this_session_and_logout_all_every_one(server, http):
    name = register(http)["user"]["username"]
    first, second, third = (login(http, name) for _ in range(3))
    sockets = [await ChatClient.connect(server.ws_url, s["token"]) for s in (first, second)]

    assert http.post("/api/auth/logout", headers=bearer(first["token"])).status_code == 200
    assert await sockets[0].closed() == AUTH_ENDED
    assert http.get("/api/auth/me", headers=bearer(first["token"])).status_code == 401
    assert refresh(http, first["refreshToken"]).status_code == 401
    await still_open(sockets[1])

    assert http.post("/api/auth/logout-all", headers=bearer(third["token"])).status_code == 200
    assert await sockets[1].closed() == AUTH_ENDED
    for session in (second, third):
        assert http.get("/api/auth/me", headers=bearer(session["token"])).status_code == 401
        assert refresh(http, session["refreshToken"]).status_code == 401
    assert http.post("/api/auth/logout").status_code == 401


async def test_an_expired_socket_is_closed_and_a_renewed_one_stays(make_server):
    server = make_server(auth={"token_ttl_seconds": 4})
    with httpx.Client(base_url=server.base_url) as http:
        account = register(http)
        stale = await ChatClient.connect(server.ws_url, account["token"])
        renewed = await ChatClient.connect(server.ws_url, account["token"])
        # Tokens count whole seconds: wait long enough for a refresh to expire later.
        await asyncio.sleep(2)
        fresh = refresh(http, account["refreshToken"]).json()
        renewed.send(type="authenticate", token=fresh["token"])
        assert (await renewed.expect("token_renewed"))["expiresAt"] > 0
        other = register(http)
        renewed.send(type="authenticate", token=other["token"])
        assert (await renewed.expect_error("conflict"))["type"] == "authenticate"

        stale.send(type="join_room", roomId="general")
        await stale.expect("room_joined")
        error = await stale.expect_error("invalid_token", timeout=6)
        assert error["message"] == "Token expired"
        assert await stale.closed() == AUTH_ENDED
        await still_open(renewed)
        assert await renewed.closed(timeout=6) == AUTH_ENDED  # its renewal ran out too


async def test_a_password_change_ends_every_other_session(server, http):
    name = register(http)["user"]["username"]
    here, elsewhere = login(http, name), login(http, name)
    here_socket = await ChatClient.connect(server.ws_url, here["token"])
    elsewhere_socket = await ChatClient.connect(server.ws_url, elsewhere["token"])
    change = {"oldPassword": "not it at all", "newPassword": "a new battery staple"}

    wrong = http.post("/api/auth/password", json=change, headers=bearer(here["token"]))
    assert wrong.status_code == 401 and wrong.json()["field"] == "oldPassword"
    short = {"oldPassword": PASSWORD, "newPassword": "short"}
    too_short = http.post("/api/auth/password", json=short, headers=bearer(here["token"]))
    assert too_short.status_code == 400 and too_short.json()["field"] == "newPassword"
    change["oldPassword"] = PASSWORD
    done = http.post("/api/auth/password", json=change, headers=bearer(here["token"]))
    assert done.status_code == 200, done.text

    assert await elsewhere_socket.closed() == AUTH_ENDED
    assert refresh(http, elsewhere["refreshToken"]).status_code == 401
    await still_open(here_socket)
    assert refresh(http, here["refreshToken"]).status_code == 200
    old = http.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert old.status_code == 401
    login(http, name, change["newPassword"])


async def test_cli_role_changes_and_bans_reach_a_running_server(server, http):
    create_account(server, "admin")  # boss is not the last admin
    boss = login(http, create_account(server, "admin", "boss"))
    socket = await ChatClient.connect(server.ws_url, boss["token"])

    done = server.cli("user", "set-role", "boss", "user")
    assert done.returncode == 0, done.stderr
    assert await socket.expect("role_changed", timeout=5) == {
        "userId": boss["user"]["id"],
        "role": "user",
    }
    socket.send(type="set_role", userId=boss["user"]["id"], role="admin")
    assert (await socket.expect_error("forbidden"))["type"] == "set_role"
    me = http.get("/api/auth/me", headers=bearer(boss["token"])).json()["user"]
    assert me["role"] == "user"
    assert login(http, "boss")["user"]["role"] == "user"
    audit = http.get("/api/admin/audit", headers=bearer(boss["token"]))
    assert audit.status_code == 403

    banned = server.cli("user", "ban", "boss", "--reason", "gone rogue")
    assert banned.returncode == 0, banned.stderr
    assert (await socket.expect("banned", timeout=5))["until"] is None
    assert await socket.closed() == BANNED
    refused = http.post("/api/auth/login", json={"username": "boss", "password": PASSWORD})
    assert refused.status_code == 403 and refused.json()["code"] == "banned"
    assert refresh(http, boss["refreshToken"]).json()["code"] == "banned"

    assert server.cli("user", "unban", "boss").returncode == 0
    login(http, "boss")


async def test_nobody_changes_their_own_role_or_removes_the_last_admin(server, http):
    only = login(http, create_account(server, "admin", "only_admin"))
    socket = await ChatClient.connect(server.ws_url, only["token"])
    socket.send(type="set_role", userId=only["user"]["id"], role="user")
    assert (await socket.expect_error("validation"))["type"] == "set_role"
    refused = server.cli("user", "set-role", "only_admin", "moderator")
    assert refused.returncode == 1 and "last admin" in refused.stderr
    assert server.cli("user", "ban", "only_admin").returncode == 1
    assert login(http, "only_admin")["user"]["role"] == "admin"


async def test_a_user_row_removed_from_the_database_no_longer_authenticates(server, http):
    account = register(http)
    socket = await ChatClient.connect(server.ws_url, account["token"])
    server.execute_sql("DELETE FROM users WHERE id = ?", (account["user"]["id"],))
    assert await socket.closed() == AUTH_ENDED
    me = http.get("/api/auth/me", headers=bearer(account["token"]))
    assert me.status_code == 401
    retry = await ChatClient.connect(server.ws_url)
    retry.send(type="authenticate", token=account["token"])
    assert (await retry.expect_error("invalid_token"))["message"] == "User not found"
    assert refresh(http, account["refreshToken"]).status_code == 401


async def test_the_admin_api_lists_users_sets_roles_and_bans(server, http):
    admin = login(http, create_account(server, "admin", "the_admin"))
    alice = register(http, "alice_admin_api")
    alice_socket = await ChatClient.connect(server.ws_url, alice["token"])
    headers = bearer(admin["token"])

    for method, path in (
        ("GET", "/api/admin/users"),
        ("POST", "/api/admin/users/role"),
        ("POST", "/api/admin/users/ban"),
        ("POST", "/api/admin/users/unban"),
    ):
        forbidden = http.request(method, path, headers=bearer(alice["token"]), json={})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
        assert http.request(method, path, json={}).status_code == 401

    users = http.get("/api/admin/users", headers=headers).json()["users"]
    assert [u["username"] for u in users] == ["alice_admin_api", "the_admin"]
    assert users[0]["role"] == "user" and users[0]["banned"] is False
    page = http.get("/api/admin/users", params={"after": "alice_admin_api"}, headers=headers)
    assert [u["username"] for u in page.json()["users"]] == ["the_admin"]
    assert http.get("/api/admin/users?limit=0", headers=headers).status_code == 400

    body = {"userId": alice["user"]["id"], "role": "moderator"}
    assert http.post("/api/admin/users/role", json=body, headers=headers).status_code == 200
    assert (await alice_socket.expect("role_changed"))["role"] == "moderator"
    bad = http.post("/api/admin/users/role", json={**body, "role": "god"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["field"] == "role"
    own = {"userId": admin["user"]["id"], "role": "user"}
    assert http.post("/api/admin/users/role", json=own, headers=headers).status_code == 400

    ban = {"userId": alice["user"]["id"], "reason": "spam"}
    assert http.post("/api/admin/users/ban", json=ban, headers=headers).status_code == 200
    assert await alice_socket.expect("banned") == {"reason": "spam", "until": None}
    assert await alice_socket.closed() == BANNED
    listed = http.get("/api/admin/users", headers=headers).json()["users"]
    assert listed[0]["banned"] is True and listed[0]["role"] == "moderator"
    unban = {"userId": alice["user"]["id"]}
    assert http.post("/api/admin/users/unban", json=unban, headers=headers).status_code == 200
    login(http, "alice_admin_api")
    entries = http.get("/api/admin/audit", headers=headers).json()["entries"]
    assert [e["action"] for e in entries] == ["unban", "ban", "set_role"]


async def post(client: ChatClient, content: str) -> str:
    client.send(type="send_message", roomId="general", content=content, clientId=content)
    return (await client.expect("message_ack", clientId=content))["messageId"]


async def test_deleting_an_account_keeps_or_removes_its_messages(server, http):
    keeper, leaver, reader = register(http), register(http), register(http)
    sockets = {}
    for account in (keeper, leaver, reader):
        sockets[account["user"]["id"]] = socket = await ChatClient.connect(
            server.ws_url, account["token"]
        )
        socket.send(type="join_room", roomId="general")
        await socket.expect("room_joined")
    kept = await post(sockets[keeper["user"]["id"]], "kept words")
    gone = await post(sockets[leaver["user"]["id"]], "gone words")
    dm = sockets[keeper["user"]["id"]]
    dm.send(
        type="private_message", targetUserId=reader["user"]["id"], content="psst", clientId="d1"
    )
    await dm.expect("message_ack", clientId="d1")

    export = http.get("/api/auth/me/export", headers=bearer(keeper["token"]))
    assert export.status_code == 200
    data = export.json()
    assert data["profile"]["username"] == keeper["user"]["username"]
    assert [m["content"] for m in data["messages"]] == ["kept words"]
    assert [(d["recipientId"], d["content"]) for d in data["directMessages"]] == [
        (reader["user"]["id"], "psst")
    ]

    wrong = http.request(
        "DELETE", "/api/auth/me", json={"password": "wrong one"}, headers=bearer(keeper["token"])
    )
    assert wrong.status_code == 401 and wrong.json()["field"] == "password"
    for account, keep in ((keeper, True), (leaver, False)):
        done = http.request(
            "DELETE",
            "/api/auth/me",
            json={"password": PASSWORD, "keepMessages": keep},
            headers=bearer(account["token"]),
        )
        assert done.status_code == 200, done.text
        assert await sockets[account["user"]["id"]].closed() == AUTH_ENDED
        again = http.post(
            "/api/auth/login",
            json={"username": account["user"]["username"], "password": PASSWORD},
        )
        assert again.status_code == 401
        assert refresh(http, account["refreshToken"]).status_code == 401

    watcher = sockets[reader["user"]["id"]]
    watcher.send(type="get_room_history", roomId="general")
    history = {m["id"]: m for m in (await watcher.expect("room_history"))["messages"]}
    assert history[kept]["content"] == "kept words"
    assert history[kept]["username"] == "deleted user"
    assert history[gone]["content"] == "" and history[gone]["deleted"] is True


async def test_names_that_would_spoof_others_are_refused(server, http):
    for username in ("System", "adm1n"):
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        refused = http.post("/api/auth/register", json=body)
        assert refused.status_code == 400 and refused.json()["field"] == "username", username
    invisible = {"username": "zw_user", "email": "zw\u200b@example.com", "password": PASSWORD}
    assert http.post("/api/auth/register", json=invisible).json()["field"] == "email"

    register(http, "alice_lookalike")
    for username, email in (
        ("aIice_lookalike", "other@example.com"),  # a capital I for the l
        ("alice_1ookalike", "another@example.com"),
        ("someone_else", "alice_lookalike@example.com".replace("a", "\u0430", 1)),
    ):
        body = {"username": username, "email": email, "password": PASSWORD}
        taken = http.post("/api/auth/register", json=body)
        assert taken.status_code == 409 and taken.json()["code"] == "conflict", username
    look_alike = server.cli("user", "create", "alice_l0okalike", stdin=PASSWORD + "\n")
    assert look_alike.returncode == 1 and "looks the same" in look_alike.stderr

    account = register(http)
    socket = await ChatClient.connect(server.ws_url, account["token"])
    socket.send(type="create_room", name="G\u0435neral")  # a Cyrillic e
    assert (await socket.expect_error("conflict"))["type"] == "create_room"
    socket.send(type="create_room", name="evil\u202etxt.exe")
    assert "text-direction" in (await socket.expect_error("validation"))["message"]
    socket.send(type="join_room", roomId="general")
    await socket.expect("room_joined")
    socket.send(type="send_message", roomId="general", content="\u200b\u200d\u2060")
    assert (await socket.expect_error("validation"))["message"] == "Message content cannot be empty"
