"""Direct messages get what room messages have: replies, edits, deletes and reactions,
between the two users only."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient


async def _dm(sender: ChatClient, target_id: str, content: str, **fields: object) -> dict:
    client_id = f"dm-{content}"
    sender.send(
        type="private_message",
        targetUserId=target_id,
        content=content,
        clientId=client_id,
        **fields,
    )
    return await sender.expect("message_ack", clientId=client_id)


async def test_direct_messages_reply_edit_delete_and_react(server):
    alice_account, bob_account = register(server.base_url), register(server.base_url)
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    carol = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    alice_id, bob_id = alice_account["user"]["id"], bob_account["user"]["id"]

    first = await _dm(alice, bob_id, "first")
    reply = await _dm(bob, alice_id, "answer", replyTo=first["messageId"])
    received = await alice.expect("private_message", id=reply["messageId"])
    assert received["replyTo"] == first["messageId"]

    alice.send(type="edit_message", messageId=first["messageId"], content="first, edited")
    for client in (alice, bob):
        edited = (await client.expect("private_message_edited"))["message"]
        assert edited["content"] == "first, edited" and edited["edited"] is True
    bob.send(type="add_reaction", messageId=first["messageId"], emoji=":heart:")
    for client in (alice, bob):
        added = await client.expect("reaction_added")
        assert added["emoji"] == "❤️" and added["userId"] == bob_id and "roomId" not in added

    for request in (
        {"type": "edit_message", "messageId": first["messageId"], "content": "mine now"},
        {"type": "delete_message", "messageId": first["messageId"]},
        {"type": "add_reaction", "messageId": first["messageId"], "emoji": "👍"},
        {
            "type": "private_message",
            "targetUserId": alice_id,
            "content": "x",
            "replyTo": first["messageId"],
        },
    ):
        carol.send(**request)
        error = await carol.expect("error")
        assert error["code"] in ("not_found", "validation"), error
    bob.send(type="edit_message", messageId=first["messageId"], content="not mine")
    await bob.expect_error("forbidden")

    bob.send(type="delete_message", messageId=reply["messageId"])
    deleted = await alice.expect("private_message_deleted")
    assert deleted == {"messageId": reply["messageId"], "fromUserId": bob_id, "toUserId": alice_id}
    alice.send(type="add_reaction", messageId=reply["messageId"], emoji="👍")
    await alice.expect_error("not_found")

    await _dm(alice, bob_id, "sync")  # everything before it is stored
    fresh = await ChatClient.connect(server.ws_url, bob_account["token"])
    fresh.send(type="get_private_history", userId=alice_id)
    messages = (await fresh.expect("private_history"))["messages"]
    assert [m["content"] for m in messages] == ["first, edited", "", "sync"]
    assert messages[0]["edited"] is True
    assert messages[0]["reactions"] == [{"emoji": "❤️", "count": 1, "userIds": [bob_id]}]
    assert messages[1]["deleted"] is True and messages[1]["replyTo"] == first["messageId"]


async def test_direct_message_changes_are_stored(make_server):
    server = make_server()
    alice_account, bob_account = register(server.base_url), register(server.base_url)
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    bob_id = bob_account["user"]["id"]
    first = await _dm(alice, bob_id, "before")
    alice.send(type="edit_message", messageId=first["messageId"], content="after")
    await alice.expect("private_message_edited")
    alice.send(type="add_reaction", messageId=first["messageId"], emoji="🎉")
    await alice.expect("reaction_added")
    await _dm(alice, bob_id, "sync")
    server.stop()
    server.start()
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    bob.send(type="get_private_history", userId=alice_account["user"]["id"])
    messages = (await bob.expect("private_history"))["messages"]
    assert messages[0]["content"] == "after" and messages[0]["edited"] is True
    assert messages[0]["reactions"][0]["emoji"] == "🎉"
