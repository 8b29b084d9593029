"""Presence: room members who went offline stay listed, with when they were last seen."""

from __future__ import annotations

from tests.support.client import joined, post


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
