"""Mentions: resolved by the server, a ``mention`` event, counted into ``mentions``."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient, joined, post, private_room


async def test_mentions_resolve_notify_and_count(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    bob_id, bob_name = bob_account["user"]["id"], bob_account["user"]["username"]
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    bob.send(type="join_room", roomId="general")
    await bob.expect("room_joined")
    bob.send(type="leave_room", roomId="general")  # a member, not in the room now
    await bob.expect("room_left")

    ack = await post(alice, "general", f"hey @{bob_name.upper()}, and @nobody_here too")
    mention = (await bob.expect("mention"))["message"]
    assert mention["id"] == ack["messageId"]
    assert mention["mentions"] == [bob_id] and "mentionsRoom" not in mention  # absent = false
    await post(alice, "general", "attention @room")
    await post(alice, "general", "mail me at x@bob.example")

    fresh = await ChatClient.connect(server.ws_url)
    rooms = {r["id"]: r for r in (await fresh.authenticate(bob_account["token"]))["rooms"]}
    assert rooms["general"]["unread"] == 3 and rooms["general"]["mentions"] == 2
    alice.send(type="get_room_history", roomId="general")
    messages = (await alice.expect("room_history"))["messages"]
    # A default value is left out: no "mentions" is [], no "mentionsRoom" is false.
    assert [(m.get("mentions"), m.get("mentionsRoom")) for m in messages] == [
        ([bob_id], None),
        (None, True),
        (None, None),
    ]


async def test_mentions_of_users_who_cannot_see_the_room_are_dropped(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    outsider_account = register(server.base_url)
    outsider = await ChatClient.connect(server.ws_url, outsider_account["token"])
    secret = await private_room(alice)
    await post(alice, secret, f"@{outsider_account['user']['username']} cannot see this")
    alice.send(type="get_room_history", roomId=secret)
    (message,) = (await alice.expect("room_history"))["messages"]
    assert "mentions" not in message
    outsider.send(type="ping")
    await outsider.expect("pong")
    assert not [e for e in outsider.drain() if e["type"] == "mention"]


async def _away_member(server, account) -> ChatClient:
    """A client of a member of general who is not in the room now."""
    client = await ChatClient.connect(server.ws_url, account["token"])
    client.send(type="join_room", roomId="general")
    await client.expect("room_joined")
    client.send(type="leave_room", roomId="general")
    await client.expect("room_left")
    return client


async def _mention_counts(server, account) -> tuple[int, int]:
    fresh = await ChatClient.connect(server.ws_url)
    rooms = {r["id"]: r for r in (await fresh.authenticate(account["token"]))["rooms"]}
    await fresh.close()
    return rooms["general"]["unread"], rooms["general"]["mentions"]


async def _mentions_seen(client: ChatClient) -> int:
    client.send(type="ping")
    await client.expect("pong")
    return sum(e["type"] == "mention" for e in client.seen)


async def test_an_edit_re_resolves_mentions_notifies_the_new_ones_and_counts(make_server):
    server = make_server()
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account, carol_account = register(server.base_url), register(server.base_url)
    bob_id, bob_name = bob_account["user"]["id"], bob_account["user"]["username"]
    carol_id, carol_name = carol_account["user"]["id"], carol_account["user"]["username"]
    bob = await _away_member(server, bob_account)
    carol = await _away_member(server, carol_account)
    ack = await post(alice, "general", f"hi @{bob_name}")
    await bob.expect("mention")

    alice.send(
        type="edit_message",
        messageId=ack["messageId"],
        content=f"hi @{bob_name}, @{carol_name} and @room",
    )
    edited = (await alice.expect("message_edited"))["message"]
    assert edited["mentions"] == [bob_id, carol_id] and edited["mentionsRoom"] is True
    await alice.expect("edit_ack")
    mention = (await carol.expect("mention"))["message"]
    assert mention["id"] == ack["messageId"] and mention["mentions"] == [bob_id, carol_id]
    assert await _mentions_seen(bob) == 1  # already mentioned: not told again
    assert await _mention_counts(server, bob_account) == (1, 1)
    assert await _mention_counts(server, carol_account) == (1, 1)

    alice.send(type="edit_message", messageId=ack["messageId"], content=f"only @{carol_name}")
    edited = (await alice.expect("message_edited"))["message"]
    assert edited["mentions"] == [carol_id] and "mentionsRoom" not in edited
    await alice.expect("edit_ack")
    assert await _mentions_seen(carol) == 1
    assert await _mention_counts(server, bob_account) == (1, 0)
    assert await _mention_counts(server, carol_account) == (1, 1)

    server.stop()  # what is stored: counts and history read from the database
    server.start()
    assert await _mention_counts(server, bob_account) == (1, 0)
    assert await _mention_counts(server, carol_account) == (1, 1)
    reader, _ = await joined(server.ws_url, server.base_url)
    reader.send(type="get_room_history", roomId="general")
    (message,) = (await reader.expect("room_history"))["messages"]
    assert message["mentions"] == [carol_id] and "mentionsRoom" not in message


async def test_a_name_resolved_before_is_resolved_from_memory_with_the_same_outcome(server):
    # The first "@bob" reads storage; the next ones are answered by the user cache, on
    # the synchronous send path: they must still be stored, delivered and notified.
    alice, _ = await joined(server.ws_url, server.base_url)
    bob_account = register(server.base_url)
    bob_id, bob_name = bob_account["user"]["id"], bob_account["user"]["username"]
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    for text in (f"@{bob_name} first", f"@{bob_name} again, @nobody_here", f"@{bob_name}. third"):
        ack = await post(alice, "general", text)
        (live,) = [
            e["data"]["message"]
            for e in alice.seen  # the broadcast comes before the ack
            if e["type"] == "new_message" and e["data"]["message"]["id"] == ack["messageId"]
        ]
        assert live["mentions"] == [bob_id]
        assert (await bob.expect("mention"))["message"]["id"] == ack["messageId"]
    alice.send(type="get_room_history", roomId="general")
    messages = (await alice.expect("room_history"))["messages"]
    assert [m["mentions"] for m in messages] == [[bob_id]] * 3
