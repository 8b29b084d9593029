"""The chat protocol end to end: real server, real picows clients, two or more per scenario."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.support.accounts import PASSWORD, register
from tests.support.client import ChatClient, joined
from tests.support.frames import OP_TEXT, client_frame
from tests.support.rawws import RawWS
from tests.support.stamps import in_window, iso, out_of_window


async def test_accounts_register_login_me_and_rooms(server):
    account = register(server.base_url, "alice_1")
    assert account["user"]["username"] == "alice_1"
    duplicate = httpx.post(
        server.base_url + "/api/auth/register",
        json={"username": "ALICE_1", "email": "other@example.com", "password": PASSWORD},
    )
    assert duplicate.status_code == 409
    bad = httpx.post(
        server.base_url + "/api/auth/register",
        json={"username": "x", "email": "a@b.co", "password": PASSWORD},
    )
    assert bad.status_code == 400 and bad.json()["field"] == "username"
    login = httpx.post(
        server.base_url + "/api/auth/login",
        json={"username": "alice_1@example.com", "password": PASSWORD},
    )
    assert login.status_code == 200
    assert login.json()["user"]["role"] == "user"
    token = login.json()["token"]
    for wrong in (
        {"username": "alice_1", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
    ):
        response = httpx.post(server.base_url + "/api/auth/login", json=wrong)
        assert response.status_code == 401
        assert response.json()["error"] == "Invalid credentials"
    long_password = httpx.post(
        server.base_url + "/api/auth/login", json={"username": "alice_1", "password": "é" * 40}
    )
    assert long_password.status_code == 401
    me = httpx.get(server.base_url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"]["id"] == account["user"]["id"]
    assert httpx.get(server.base_url + "/api/auth/me").status_code == 401
    assert (
        httpx.get(
            server.base_url + "/api/auth/me", headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    rooms = httpx.get(
        server.base_url + "/api/chat/rooms", headers={"Authorization": f"Bearer {token}"}
    ).json()["rooms"]
    assert {r["id"] for r in rooms} >= {"general", "random", "tech"}
    assert all("member_count" in r for r in rooms)


async def test_nothing_but_authenticate_before_auth_and_bad_token(server):
    client = await ChatClient.connect(server.ws_url)
    client.send(type="join_room", roomId="general")
    error = await client.expect_error("auth_required")
    assert error["type"] == "join_room"
    client.send(type="authenticate", token="not-a-jwt")
    await client.expect_error("invalid_token")
    await client.close()


async def test_bad_input_gets_precise_errors(server):
    client, _ = await joined(server.ws_url, server.base_url)
    client.send_raw(b"{not json")
    await client.expect_error("invalid_json")
    client.send(type="no_such_thing")
    await client.expect_error("unknown_type")
    client.send(type="send_message", roomId=5, content="x")
    error = await client.expect_error("validation")
    assert error["type"] == "send_message"
    client.send(type="send_message", roomId="general", content="   ")
    await client.expect_error("validation")
    client.send(type="send_message", roomId="general", content="x" * 2001)
    await client.expect_error("validation")
    client.send(type="send_message", roomId="nope", content="hi")
    await client.expect_error("not_found")
    client.send(type="send_message", roomId="random", content="hi")
    await client.expect_error("not_member")
    # the connection is still fine
    client.send(type="send_message", roomId="general", content="still here")
    await client.expect("new_message")
    await client.close()


async def test_message_fan_out_ack_and_history(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    joined_event = await alice.expect("user_joined", roomId="general")
    assert joined_event["user"]["id"] == bob_account["user"]["id"]

    alice.send(type="send_message", roomId="general", content="hello <b>bob</b>", clientId="c1")
    seen_by_bob = (await bob.expect("new_message"))["message"]
    seen_by_alice = (await alice.expect("new_message"))["message"]
    assert seen_by_bob == seen_by_alice
    assert seen_by_bob["content"] == "hello <b>bob</b>"
    assert seen_by_bob["clientId"] == "c1"
    ack = await alice.expect("message_ack", clientId="c1")
    assert ack["messageId"] == seen_by_bob["id"] and ack["seq"] == seen_by_bob["seq"]

    bob.send(type="send_message", roomId="general", content="hi alice", replyTo=seen_by_bob["id"])
    reply = (await alice.expect("new_message"))["message"]
    assert reply["replyTo"] == seen_by_bob["id"]
    assert reply["seq"] == seen_by_bob["seq"] + 1

    bob.send(type="get_room_history", roomId="general", limit=10)
    history = await bob.expect("room_history")
    assert [m["content"] for m in history["messages"]][-2:] == ["hello <b>bob</b>", "hi alice"]
    assert history["hasMore"] is False
    bob.send(type="get_room_history", roomId="general", before=reply["seq"], limit=1)
    page = await bob.expect("room_history")
    assert [m["seq"] for m in page["messages"]] == [seen_by_bob["seq"]]
    await alice.close()
    await bob.close()


async def test_reply_to_other_room_is_refused(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="join_room", roomId="random")
    await alice.expect("room_joined", roomId="random")
    alice.send(type="send_message", roomId="random", content="over here")
    other = (await alice.expect("new_message"))["message"]
    alice.send(type="send_message", roomId="general", content="reply", replyTo=other["id"])
    error = await alice.expect_error("validation")
    assert "replyTo" in error["message"]
    await alice.close()


async def test_idempotent_resend_is_not_stored_twice(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="send_message", roomId="general", content="once", clientId="same-id")
    first = await alice.expect("message_ack", clientId="same-id")
    alice.send(type="send_message", roomId="general", content="once", clientId="same-id")
    again = await alice.expect("message_ack", clientId="same-id")
    assert again["messageId"] == first["messageId"] and again["seq"] == first["seq"]
    alice.send(type="get_room_history", roomId="general")
    history = await alice.expect("room_history")
    assert sum(1 for m in history["messages"] if m["clientId"] == "same-id") == 1
    await alice.close()


async def test_resend_is_deduplicated_within_the_client_id_window_only(server):
    # docs/durability.md: a resend finds its original if that was stored in the current UTC
    # hour or the 24 before (by created_at); an older one is stored again, as a new message.
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    first: dict[str, dict] = {}
    for client_id in ("room-1h", "room-2h"):
        alice.send(type="send_message", roomId="general", content=client_id, clientId=client_id)
        first[client_id] = await alice.expect("message_ack", clientId=client_id)
    for client_id in ("dm-1h", "dm-2h"):
        alice.send(
            type="private_message",
            targetUserId=bob_account["user"]["id"],
            content=client_id,
            clientId=client_id,
        )
        first[client_id] = await alice.expect("message_ack", clientId=client_id)
    await alice.close()
    await bob.close()
    assert server.stop() == 0
    now = time.time()
    for table in ("messages", "direct_messages"):
        for suffix, at in (("-1h", in_window(now)), ("-2h", out_of_window(now))):
            server.execute_sql(
                f"UPDATE {table} SET created_at = ? WHERE client_id LIKE ?", (iso(at), f"%{suffix}")
            )
    server.start()  # the restarted server knows the window's clientIds from the database only

    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    alice.send(type="join_room", roomId="general")
    await alice.expect("room_joined", roomId="general")
    for client_id in first:
        if client_id.startswith("room"):
            alice.send(type="send_message", roomId="general", content="again", clientId=client_id)
        else:
            alice.send(
                type="private_message",
                targetUserId=bob_account["user"]["id"],
                content="again",
                clientId=client_id,
            )
        again = await alice.expect("message_ack", clientId=client_id)
        inside = client_id.endswith("-1h")
        assert (again["messageId"] == first[client_id]["messageId"]) is inside, client_id
    alice.send(type="get_room_history", roomId="general")
    history = (await alice.expect("room_history"))["messages"]
    assert sorted((m["clientId"], m["content"]) for m in history) == [
        ("room-1h", "room-1h"), ("room-2h", "again"), ("room-2h", "room-2h"),
    ]  # fmt: skip
    alice.send(type="get_private_history", userId=bob_account["user"]["id"])
    private = (await alice.expect("private_history"))["messages"]
    assert sorted(m["content"] for m in private) == ["again", "dm-1h", "dm-2h"]
    await alice.close()


async def test_resend_while_in_flight_is_acked_once_stored_with_the_same_id(server):
    account = register(server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    alice = await RawWS.open(server.host, server.port)
    await alice.expect("connection_established")
    await alice.send_json(type="authenticate", token=account["token"])
    await alice.expect("authenticated")
    await alice.send_json(type="join_room", roomId="general")
    await alice.expect("room_joined", roomId="general")
    room_message = orjson.dumps(
        {"type": "send_message", "roomId": "general", "content": "twice", "clientId": "r1"}
    )
    dm = orjson.dumps(
        {
            "type": "private_message",
            "targetUserId": bob_account["user"]["id"],
            "content": "hi",
            "clientId": "r1",
        }
    )
    # One write: the server reads all four frames at once, so each resend finds its
    # clientId still on its way to the disk.
    await alice.send_bytes(b"".join(client_frame(OP_TEXT, m) for m in (room_message, dm) * 2))
    acks = [(await alice.expect("message_ack", clientId="r1"))[1] for _ in range(4)]
    assert len({a["messageId"] for a in acks}) == 2  # two messages, each acked twice
    assert sorted(a["messageId"] for a in acks)[0::2] == sorted(a["messageId"] for a in acks)[1::2]
    bob.send(type="get_room_history", roomId="general")
    history = await bob.expect("room_history")
    assert [m["content"] for m in history["messages"] if m["clientId"] == "r1"] == ["twice"]
    bob.send(type="get_private_history", userId=account["user"]["id"])
    private = await bob.expect("private_history")
    assert [m["content"] for m in private["messages"]] == ["hi"]
    alice.close()
    await bob.close()


async def test_client_id_reused_elsewhere_is_a_conflict(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="join_room", roomId="random")
    await alice.expect("room_joined", roomId="random")
    alice.send(type="send_message", roomId="general", content="first", clientId="dup")
    await alice.expect("message_ack", clientId="dup")
    alice.send(type="send_message", roomId="random", content="second", clientId="dup")
    error = await alice.expect_error("conflict")
    assert "clientId" in error["message"]
    await alice.close()


async def test_catch_up_after_reconnect_with_since(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    bob.send(type="send_message", roomId="general", content="before")
    last_seen = (await alice.expect("new_message"))["message"]["seq"]
    await alice.close()
    for i in range(3):
        bob.send(type="send_message", roomId="general", content=f"missed {i}", clientId=f"m{i}")
        await bob.expect("message_ack", clientId=f"m{i}")
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    alice.send(type="join_room", roomId="general", since=last_seen)
    await alice.expect("room_joined")
    catch_up = await alice.expect("room_history")
    assert [m["content"] for m in catch_up["messages"]] == ["missed 0", "missed 1", "missed 2"]
    await alice.close()
    await bob.close()


async def test_presence_status_and_leave(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    bob.send(type="join_room", roomId="general")
    joined_data = await bob.expect("room_joined")
    assert len(joined_data["members"]) >= 2
    await bob.close()
    left = await alice.expect("user_left", roomId="general")
    assert left["user"]["id"] == bob_account["user"]["id"]
    status = await alice.expect("user_status", status="offline")
    assert status["userId"] == bob_account["user"]["id"]
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    online = await alice.expect("user_status", status="online")
    assert online["userId"] == bob_account["user"]["id"]
    bob.send(type="join_room", roomId="general")
    await bob.expect("room_joined")
    bob.send(type="leave_room", roomId="general")
    assert (await bob.expect("room_left"))["roomId"] == "general"
    await alice.expect("user_left", roomId="general")
    await alice.close()
    await bob.close()


async def test_typing_start_stop_and_clear_on_message(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="typing_start", roomId="general")
    typing = await bob.expect("user_typing")
    assert typing == {
        "userId": alice_account["user"]["id"],
        "username": alice_account["user"]["username"],
        "roomId": "general",
        "typing": True,
    }
    alice.send(type="send_message", roomId="general", content="done typing")
    stopped = await bob.expect("user_typing")
    assert stopped["typing"] is False
    await alice.close()
    await bob.close()


async def test_direct_messages_online_and_offline(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    alice.send(
        type="private_message",
        targetUserId=bob_account["user"]["id"],
        content="are you there?",
        clientId="d1",
    )
    sent = await alice.expect("private_message_sent")
    assert sent["targetUserId"] == bob_account["user"]["id"]
    await alice.expect("message_ack", clientId="d1")
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    bob.send(type="get_private_history", userId=alice_account["user"]["id"])
    history = await bob.expect("private_history")
    assert [m["content"] for m in history["messages"]] == ["are you there?"]
    bob.send(type="private_message", targetUserId=alice_account["user"]["id"], content="yes")
    received = await alice.expect("private_message")
    assert received["from"]["id"] == bob_account["user"]["id"] and received["content"] == "yes"
    bob.send(type="private_message", targetUserId="no-such-user", content="x")
    await bob.expect_error("not_found")
    await alice.close()
    await bob.close()


async def test_edit_and_delete_own_messages_only(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="send_message", roomId="general", content="typo", clientId="e1")
    message = (await bob.expect("new_message"))["message"]
    bob.send(type="edit_message", messageId=message["id"], content="hacked")
    await bob.expect_error("forbidden")
    bob.send(type="delete_message", messageId=message["id"])
    await bob.expect_error("forbidden")
    alice.send(type="edit_message", messageId=message["id"], content="fixed")
    edited = (await bob.expect("message_edited"))["message"]
    assert (
        edited["content"] == "fixed"
        and edited["edited"] is True
        and edited["seq"] == message["seq"]
    )
    alice.send(type="delete_message", messageId=message["id"])
    deleted = await bob.expect("message_deleted")
    assert deleted == {"messageId": message["id"], "roomId": "general"}
    bob.send(type="get_room_history", roomId="general")
    history = await bob.expect("room_history")
    gone = next(m for m in history["messages"] if m["id"] == message["id"])
    assert gone["content"] == "" and gone["deleted"] is True
    alice.send(type="edit_message", messageId=message["id"], content="again")
    await alice.expect_error("not_found")
    await alice.close()
    await bob.close()


async def test_private_rooms_are_invisible_until_invited(server):
    owner, _ = await joined(server.ws_url, server.base_url)
    outsider_account = register(server.base_url)
    outsider = await ChatClient.connect(server.ws_url, outsider_account["token"])
    owner.send(type="create_room", name="Secret", description="shh", isPrivate=True)
    room = (await owner.expect("room_created"))["room"]
    assert room["is_private"] is True and room["member_count"] == 1
    owner.send(type="join_room", roomId=room["id"])
    await owner.expect("room_joined", roomId=room["id"])
    owner.send(type="send_message", roomId=room["id"], content="private stuff")
    await owner.expect("new_message")
    for request in (
        {"type": "join_room", "roomId": room["id"]},
        {"type": "get_room_history", "roomId": room["id"]},
        {"type": "send_message", "roomId": room["id"], "content": "let me in"},
    ):
        outsider.send(**request)
        hidden = await outsider.expect_error("not_found")
        outsider.send(**{**request, "roomId": "no-such-room"})
        assert await outsider.expect_error("not_found") == hidden  # as if it did not exist
    rooms = httpx.get(
        server.base_url + "/api/chat/rooms",
        headers={"Authorization": f"Bearer {outsider_account['token']}"},
    ).json()["rooms"]
    assert room["id"] not in {r["id"] for r in rooms}
    outsider.send(type="invite_to_room", roomId="general", userId=outsider_account["user"]["id"])
    await outsider.expect_error("forbidden")
    owner.send(type="invite_to_room", roomId=room["id"], userId=outsider_account["user"]["id"])
    invited = await outsider.expect("room_invited")
    assert invited["room"]["id"] == room["id"]
    outsider.send(type="join_room", roomId=room["id"], since=0)
    await outsider.expect("room_joined", roomId=room["id"])
    history = await outsider.expect("room_history")
    assert [m["content"] for m in history["messages"]] == ["private stuff"]
    await owner.close()
    await outsider.close()


async def test_multiple_tabs_count_for_presence(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    tab1 = await ChatClient.connect(server.ws_url, bob_account["token"])
    tab1.send(type="join_room", roomId="general")
    await tab1.expect("room_joined")
    tab2 = await ChatClient.connect(server.ws_url, bob_account["token"])
    await tab1.close()
    alice.send(type="ping")
    await alice.expect("pong")
    assert not any(
        e["type"] == "user_status" and e["data"]["status"] == "offline"
        for e in alice.seen + alice.drain()
    )
    await tab2.close()
    await alice.expect("user_status", status="offline")
    await alice.close()


@pytest.mark.parametrize("frame", [b"\xff\xfe", orjson.dumps([1, 2]), b"null"])
async def test_garbage_frames_never_break_others(server, frame):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    alice.send_raw(frame)
    bob.send(type="send_message", roomId="general", content="unaffected")
    assert (await bob.expect("new_message"))["message"]["content"] == "unaffected"
    await asyncio.gather(alice.close(), bob.close())


async def test_history_pages_across_memory_and_disk(make_server):
    server = make_server(storage={"history_cache": 5})
    alice, _ = await joined(server.ws_url, server.base_url)
    for i in range(12):
        alice.send(type="send_message", roomId="general", content=f"m{i}", clientId=f"h{i}")
        await alice.expect("message_ack", clientId=f"h{i}")
    seqs: list[int] = []
    before = None
    while True:
        request = {"type": "get_room_history", "roomId": "general", "limit": 4}
        if before is not None:
            request["before"] = before
        alice.send(**request)
        page = await alice.expect("room_history")
        seqs = [m["seq"] for m in page["messages"]] + seqs
        if not page["hasMore"]:
            break
        before = page["messages"][0]["seq"]
    assert seqs == list(range(1, 13))
    alice.send(type="get_room_history", roomId="general", after=2, limit=20)
    newer = await alice.expect("room_history")
    assert [m["content"] for m in newer["messages"]] == [f"m{i}" for i in range(2, 12)]
    assert newer["hasMore"] is False
    alice.send(type="get_room_history", roomId="general", after=2, limit=3)
    first = await alice.expect("room_history")
    assert [m["seq"] for m in first["messages"]] == [3, 4, 5] and first["hasMore"] is True
    await alice.close()


async def test_a_room_trimmed_to_the_total_still_pages_and_edits_from_disk(make_server):
    server = make_server(storage={"history_cache": 5, "history_cache_total": 5})
    alice, _ = await joined(server.ws_url, server.base_url)
    alice.send(type="join_room", roomId="random")
    await alice.expect("room_joined", roomId="random")
    for room in ("general", "random"):  # random's messages push general's out of memory
        for i in range(5):
            alice.send(
                type="send_message", roomId=room, content=f"{room}{i}", clientId=f"{room}{i}"
            )
            await alice.expect("message_ack", clientId=f"{room}{i}")
    alice.send(type="get_room_history", roomId="general", limit=10)
    page = await alice.expect("room_history")
    assert [m["content"] for m in page["messages"]] == [f"general{i}" for i in range(5)]
    assert page["hasMore"] is False
    oldest = page["messages"][0]["id"]
    alice.send(type="edit_message", messageId=oldest, content="edited")
    assert (await alice.expect("message_edited"))["message"]["content"] == "edited"
    alice.send(type="get_room_history", roomId="general", before=2, limit=10)
    first = (await alice.expect("room_history"))["messages"]
    assert [(m["id"], m["content"], m["edited"]) for m in first] == [(oldest, "edited", True)]
    await alice.close()


async def test_user_left_only_when_the_last_tab_leaves_the_room(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    tabs = []
    for _ in range(2):
        tab = await ChatClient.connect(server.ws_url, bob_account["token"])
        tab.send(type="join_room", roomId="general")
        await tab.expect("room_joined")
        tabs.append(tab)
    await alice.expect("user_joined")
    mark = len(alice.seen)
    tabs[0].send(type="leave_room", roomId="general")
    await tabs[0].expect("room_left")
    alice.send(type="ping")
    await alice.expect("pong")
    since = (alice.seen + alice.drain())[mark:]
    # the second tab is the same user: no second user_joined, no user_left while it stays
    assert not any(e["type"] in ("user_left", "user_joined") for e in since)
    tabs[1].send(type="leave_room", roomId="general")
    left = await alice.expect("user_left")
    assert left["user"]["id"] == bob_account["user"]["id"]
    for client in (alice, *tabs):
        await client.close()
