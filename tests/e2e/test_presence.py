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


async def bounce(client: ChatClient, account: dict, ws_url: str, watcher: ChatClient) -> ChatClient:
    """Close the user's only connection and connect again (to ``ws_url``), ``watcher``
    told both; the new connection."""
    user_id = account["user"]["id"]
    await client.close()
    await watcher.expect("user_status", userId=user_id, status="offline")
    client = await ChatClient.connect(ws_url, account["token"])
    await watcher.expect("user_status", userId=user_id, status="online")
    return client


async def test_dm_peers_sharing_no_room_see_each_others_presence(server):
    alice, alice_account = await joined(server.ws_url, server.base_url, room="random")
    bob_account = register(server.base_url)  # in no room at all
    bob_id = bob_account["user"]["id"]
    bob = await ChatClient.connect(server.ws_url, bob_account["token"])

    # A conversation started while both are online: each now sees the other's presence.
    alice.send(type="private_message", targetUserId=bob_id, content="hi")
    await bob.expect("private_message")
    bob = await bounce(bob, bob_account, server.ws_url, alice)
    # A conversation read from the store at login: alice comes back, bob is told.
    alice = await bounce(alice, alice_account, server.ws_url, bob)

    # Someone without a conversation with bob, in no shared room, is not told.
    stranger = await ChatClient.connect(server.ws_url, register(server.base_url)["token"])
    await bob.close()
    await alice.expect("user_status", userId=bob_id, status="offline")
    stranger.send(type="ping")
    await stranger.expect("pong")
    assert not [e for e in stranger.seen if e["type"] == "user_status"]
