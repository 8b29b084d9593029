"""Read markers, unread counts and the conversation list on ``authenticated``."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient, joined, post, private_room


async def test_dm_received_offline_is_listed_with_unread_on_a_fresh_login(server):
    alice_account, bob_account = register(server.base_url), register(server.base_url)
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    bob_id = bob_account["user"]["id"]
    alice.send(type="private_message", targetUserId=bob_id, content="hi bob", clientId="d1")
    await alice.expect("message_ack", clientId="d1")

    bob = await ChatClient.connect(server.ws_url)
    welcome = await bob.authenticate(bob_account["token"])
    (conversation,) = welcome["conversations"]
    assert conversation["user"]["id"] == alice_account["user"]["id"]
    assert conversation["user"]["online"] is True
    assert conversation["unread"] == 1 and conversation["lastReadSeq"] == 0
    assert conversation["lastMessage"]["content"] == "hi bob"
    seq = conversation["lastMessage"]["seq"]

    second_tab = await ChatClient.connect(server.ws_url, bob_account["token"])
    bob.send(type="mark_read", userId=alice_account["user"]["id"], seq=seq)
    for tab in (bob, second_tab):
        marker = await tab.expect("read_marker")
        assert marker == {"userId": alice_account["user"]["id"], "seq": seq}
    receipt = await alice.expect("read_receipt")
    assert receipt == {"userId": bob_id, "seq": seq}

    bob.send(type="mark_read", userId=alice_account["user"]["id"], seq=seq + 1)
    error = await bob.expect_error("validation")
    assert error["type"] == "mark_read"
    await second_tab.close()
    await bob.close()
    again = await ChatClient.connect(server.ws_url)
    (conversation,) = (await again.authenticate(bob_account["token"]))["conversations"]
    assert conversation["unread"] == 0 and conversation["lastReadSeq"] == seq
    # Alice's own view: nothing unread (her own message), bob listed.
    alice_view = await ChatClient.connect(server.ws_url)
    (mine,) = (await alice_view.authenticate(alice_account["token"]))["conversations"]
    assert mine["user"]["id"] == bob_id and mine["unread"] == 0


async def test_room_unread_counts_marks_forward_only_and_receipts(server):
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    first = await post(alice, "general", "one")
    second = await post(alice, "general", "two")

    other_tab = await ChatClient.connect(server.ws_url)
    rooms = {r["id"]: r for r in (await other_tab.authenticate(bob_account["token"]))["rooms"]}
    general = rooms["general"]
    assert general["unread"] == 2 and general["mentions"] == 0
    assert general["lastReadSeq"] == 0
    assert general["lastMessage"]["id"] == second["messageId"]
    assert rooms["random"]["unread"] == 0 and rooms["random"]["lastMessage"] is None

    bob.send(type="mark_read", roomId="general", seq=first["seq"])
    for tab in (bob, other_tab):
        assert await tab.expect("read_marker") == {"roomId": "general", "seq": first["seq"]}
    receipt = await alice.expect("read_receipt")
    assert receipt == {
        "roomId": "general",
        "userId": bob_account["user"]["id"],
        "seq": first["seq"],
    }

    bob.send(type="mark_read", roomId="general", seq=0)  # backwards: ignored
    bob.send(type="mark_read", roomId="general", seq=second["seq"] + 5)
    await bob.expect_error("validation")
    bob.send(type="mark_read", roomId="random", seq=0)  # visible, never joined
    await bob.expect_error("not_member")
    secret = await private_room(alice)
    bob.send(type="mark_read", roomId=secret, seq=0)
    await bob.expect_error("not_found")
    bob.send(type="mark_read", seq=1)
    await bob.expect_error("validation")
    bob.send(type="ping")
    await bob.expect("pong")
    assert not [e for e in bob.drain() if e["type"] == "read_marker"]

    fresh = await ChatClient.connect(server.ws_url)
    rooms = {r["id"]: r for r in (await fresh.authenticate(bob_account["token"]))["rooms"]}
    assert rooms["general"]["unread"] == 1 and rooms["general"]["lastReadSeq"] == first["seq"]


async def test_unread_counts_survive_a_restart(make_server):
    server = make_server()
    alice, _ = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    first = await post(alice, "general", "one")
    await post(alice, "general", "two")
    bob.send(type="mark_read", roomId="general", seq=first["seq"])
    await bob.expect("read_marker")
    server.stop()
    server.start()
    fresh = await ChatClient.connect(server.ws_url)
    rooms = {r["id"]: r for r in (await fresh.authenticate(bob_account["token"]))["rooms"]}
    assert rooms["general"]["unread"] == 1
    assert rooms["general"]["lastReadSeq"] == first["seq"]
    assert rooms["general"]["lastMessage"]["content"] == "two"


async def test_opening_a_conversation_tells_how_far_the_others_have_read(make_server):
    server = make_server()
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    alice_id, bob_id = alice_account["user"]["id"], bob_account["user"]["id"]
    first = await post(alice, "general", "one")
    await post(alice, "general", "two")
    bob.send(type="mark_read", roomId="general", seq=first["seq"])
    await bob.expect("read_marker")
    alice.send(type="private_message", targetUserId=bob_id, content="dm", clientId="d1")
    dm = await alice.expect("message_ack", clientId="d1")
    bob.send(type="mark_read", userId=alice_id, seq=dm["seq"])
    await bob.expect("read_marker", userId=alice_id)

    async def receipts_on_opening() -> tuple[list[dict], list[dict]]:
        """What a fresh connection of alice's is told on join_room and on the DM's history."""
        client = await ChatClient.connect(server.ws_url, alice_account["token"])
        client.send(type="join_room", roomId="general")
        await client.expect("room_joined")
        client.send(type="get_private_history", userId=bob_id)
        await client.expect("private_history")
        client.send(type="ping")
        await client.expect("pong")
        receipts = [e["data"] for e in client.seen if e["type"] == "read_receipt"]
        await client.close()
        return [r for r in receipts if "roomId" in r], [r for r in receipts if "roomId" not in r]

    # bob is online: his markers in memory
    room_receipts, dm_receipts = await receipts_on_opening()
    assert room_receipts == [{"roomId": "general", "userId": bob_id, "seq": first["seq"]}]
    assert dm_receipts == [{"userId": bob_id, "seq": dm["seq"]}]
    # bob is gone, the server restarted: his markers from the database
    await bob.close()
    await alice.close()
    server.stop()
    server.start()
    room_receipts, dm_receipts = await receipts_on_opening()
    assert room_receipts == [{"roomId": "general", "userId": bob_id, "seq": first["seq"]}]
    assert dm_receipts == [{"userId": bob_id, "seq": dm["seq"]}]
