"""Reactions and threads: events to the room, message objects carrying them, access rules."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient, joined, post, private_room


async def test_reactions_add_remove_fan_out_and_reach_history(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    ack = await post(alice, "general", "react to me")
    message_id = ack["messageId"]

    bob.send(type="add_reaction", messageId=message_id, emoji=":thumbsup:")
    for client in (alice, bob):
        added = await client.expect("reaction_added")
        assert added == {
            "messageId": message_id,
            "roomId": "general",
            "emoji": "👍",
            "userId": bob_account["user"]["id"],
            "username": bob_account["user"]["username"],
        }
    alice.send(type="add_reaction", messageId=message_id, emoji="👍")
    await bob.expect("reaction_added", userId=alice_account["user"]["id"])
    alice.send(type="add_reaction", messageId=message_id, emoji="👨‍👩‍👧")
    await bob.expect("reaction_added", emoji="👨‍👩‍👧")
    bob.send(type="remove_reaction", messageId=message_id, emoji="👍")
    removed = await alice.expect("reaction_removed")
    assert removed["userId"] == bob_account["user"]["id"] and removed["emoji"] == "👍"

    for bad in ("a", "👍👍", ":not_a_code:", "", "x" * 100):
        bob.send(type="add_reaction", messageId=message_id, emoji=bad)
        error = await bob.expect_error("validation")
        assert error["type"] == "add_reaction"
    bob.send(type="add_reaction", messageId="no-such-message", emoji="👍")
    await bob.expect_error("not_found")

    expected = [
        {"emoji": "👍", "count": 1, "userIds": [alice_account["user"]["id"]]},
        {"emoji": "👨‍👩‍👧", "count": 1, "userIds": [alice_account["user"]["id"]]},
    ]
    bob.send(type="get_room_history", roomId="general")
    (message,) = (await bob.expect("room_history"))["messages"]
    assert message["reactions"] == expected


async def test_reactions_are_stored(make_server):
    server = make_server()
    alice, _ = await joined(server.ws_url, server.base_url)
    ack = await post(alice, "general", "kept")
    alice.send(type="add_reaction", messageId=ack["messageId"], emoji="🎉")
    await alice.expect("reaction_added")
    await post(alice, "general", "after")  # committed after the reaction: it is stored
    server.stop()
    server.start()
    client, _ = await joined(server.ws_url, server.base_url)
    client.send(type="get_room_history", roomId="general")
    messages = (await client.expect("room_history"))["messages"]
    assert messages[0]["reactions"][0]["emoji"] == "🎉"
    assert messages[0]["reactions"][0]["count"] == 1


async def test_private_room_messages_cannot_be_reacted_to_or_threaded_by_outsiders(server):
    owner, _ = await joined(server.ws_url, server.base_url)
    outsider = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    secret = await private_room(owner)
    ack = await post(owner, secret, "inside")
    for request in (
        {"type": "add_reaction", "messageId": ack["messageId"], "emoji": "👍"},
        {"type": "remove_reaction", "messageId": ack["messageId"], "emoji": "👍"},
        {"type": "get_thread", "messageId": ack["messageId"]},
    ):
        outsider.send(**request)
        error = await outsider.expect_error("not_found")
        assert error["message"] == "Message not found"
    owner.send(type="ping")
    await owner.expect("pong")
    assert not [e for e in owner.drain() if e["type"].startswith("reaction")]


async def test_replies_count_into_the_parent_and_page_as_a_thread(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    parent = await post(alice, "general", "parent")
    assert "replyCount" not in (await bob.expect("new_message"))["message"]  # absent = 0
    replies = []
    for n in range(3):
        replies.append(await post(bob, "general", f"reply {n}", replyTo=parent["messageId"]))
        updated = await alice.expect("thread_updated")
        assert updated == {
            "messageId": parent["messageId"],
            "roomId": "general",
            "replyCount": n + 1,
        }
    alice.send(type="get_thread", messageId=parent["messageId"], limit=2)
    thread = await alice.expect("thread")
    assert thread["messageId"] == parent["messageId"] and thread["hasMore"] is True
    assert [m["content"] for m in thread["replies"]] == ["reply 1", "reply 2"]
    alice.send(type="get_thread", messageId=parent["messageId"], before=replies[1]["seq"])
    older = await alice.expect("thread")
    assert [m["content"] for m in older["replies"]] == ["reply 0"] and older["hasMore"] is False
    alice.send(type="get_room_history", roomId="general")
    history = (await alice.expect("room_history"))["messages"]
    assert history[0]["replyCount"] == 3
    alice.send(type="get_thread", messageId="nope")
    await alice.expect_error("not_found")
    alice.send(type="get_thread", messageId=parent["messageId"], limit=0)
    await alice.expect_error("validation")


async def test_reply_counts_are_stored(make_server):
    server = make_server()
    alice, _ = await joined(server.ws_url, server.base_url)
    parent = await post(alice, "general", "parent")
    await post(alice, "general", "child", replyTo=parent["messageId"])
    await post(alice, "general", "after")
    server.stop()
    server.start()
    client, _ = await joined(server.ws_url, server.base_url)
    client.send(type="get_thread", messageId=parent["messageId"])
    thread = await client.expect("thread")
    assert [m["content"] for m in thread["replies"]] == ["child"]
    client.send(type="get_room_history", roomId="general")
    history = (await client.expect("room_history"))["messages"]
    assert history[0]["replyCount"] == 1


async def test_a_deleted_reply_leaves_its_parents_count_and_thread(make_server):
    server = make_server()
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, _ = await joined(server.ws_url, server.base_url)
    parent = await post(alice, "general", "parent")
    first = await post(bob, "general", "reply 0", replyTo=parent["messageId"])
    await post(bob, "general", "reply 1", replyTo=parent["messageId"])
    await alice.expect("thread_updated", replyCount=2)

    bob.send(type="delete_message", messageId=first["messageId"])
    await bob.expect("delete_ack")
    updated = await alice.expect("thread_updated")
    assert updated == {"messageId": parent["messageId"], "roomId": "general", "replyCount": 1}
    alice.send(type="get_thread", messageId=parent["messageId"])
    thread = await alice.expect("thread")
    assert [m["content"] for m in thread["replies"]] == ["reply 1"]
    bob.send(type="delete_message", messageId=first["messageId"])  # once only
    await bob.expect_error("not_found")

    server.stop()
    server.start()
    client, _ = await joined(server.ws_url, server.base_url)
    client.send(type="get_room_history", roomId="general")
    history = (await client.expect("room_history"))["messages"]
    assert history[0]["replyCount"] == 1
    client.send(type="get_thread", messageId=parent["messageId"])
    assert [m["content"] for m in (await client.expect("thread"))["replies"]] == ["reply 1"]
