"""Presence: room members who went offline stay listed, with when they were last seen."""

from __future__ import annotations

from tests.support.accounts import register
from tests.support.client import ChatClient, joined, post


async def test_offline_members_stay_listed_with_last_seen(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    await bob.close()
    await alice.expect("user_status", userId=bob_account["user"]["id"], status="offline")
    await post(alice, "general", "sync")  # bob's last_seen is committed before this ack

    carol, _ = await joined(server.ws_url, server.base_url, room="random")
    carol.send(type="join_room", roomId="general")
    members = {m["id"]: m for m in (await carol.expect("room_joined", roomId="general"))["members"]}
    assert members[alice_account["user"]["id"]]["status"] == "online"
    offline = members[bob_account["user"]["id"]]
    assert offline["status"] == "offline"
    assert offline["username"] == bob_account["user"]["username"]
    assert offline["last_seen"].endswith("Z")


async def test_dm_peers_sharing_no_room_see_each_others_presence(server):
    alice, alice_account = await joined(server.ws_url, server.base_url, room="random")
    alice_id = alice_account["user"]["id"]
    bob_account = register(server.base_url)  # in no room at all
    bob_id = bob_account["user"]["id"]
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])

    # A conversation started while both are online: each now sees the other's presence.
    alice.send(type="private_message", targetUserId=bob_id, content="hi")
    await bob.expect("private_message")
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])
    await alice.expect("user_status", userId=bob_id, status="online")

    # A conversation read from the store at login: alice comes back, bob is told.
    await alice.close()
    await bob.expect("user_status", userId=alice_id, status="offline")
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    await bob.expect("user_status", userId=alice_id, status="online")

    # Someone without a conversation with bob, in no shared room, is not told.
    stranger = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    stranger.send(type="ping")
    await stranger.expect("pong")
    assert not [e for e in stranger.seen if e["type"] == "user_status"]
