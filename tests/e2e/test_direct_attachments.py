"""Files in direct messages: attached as in rooms, downloadable by the two users only, withdrawn
with the message, and there for a recipient who was offline."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.accounts import register
from tests.support.client import ChatClient, post
from tests.support.uploads import PNG, TEXT, download, upload


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    """One HTTP client to the ``server`` fixture's server."""
    with httpx.Client(base_url=server.base_url) as client:
        yield client


def _send_file(sender: ChatClient, target_id: str, file_id: str, client_id: str, **fields) -> None:
    sender.send(
        type="private_message",
        targetUserId=target_id,
        clientId=client_id,
        fileId=file_id,
        **{"messageType": "file", "content": "", **fields},
    )


async def test_a_file_in_a_direct_message_reaches_the_two_users_only(server, http):
    alice_account, bob_account = register(http), register(http)
    carol_token = register(http)["token"]
    alice_token, bob_token = alice_account["token"], bob_account["token"]
    alice_id, bob_id = alice_account["user"]["id"], bob_account["user"]["id"]
    alice = await ChatClient.connect(server.ws_url, alice_token)
    bob = await ChatClient.connect(server.ws_url, bob_token)
    image = upload(http, alice_token, PNG, "cat.png", "image/png").json()["file"]

    _send_file(bob, alice_id, image["id"], "b1", messageType="image")  # not bob's upload
    error = await bob.expect_error("not_found")
    assert error["type"] == "private_message"
    _send_file(alice, bob_id, image["id"], "a1", messageType="image", content="a cat")
    received = await bob.expect("private_message", clientId="a1")
    assert received["attachment"] == image and received["messageType"] == "image"
    assert received["content"] == "a cat" and received["from"]["id"] == alice_id
    sent = await alice.expect("private_message_sent", clientId="a1")
    assert sent["attachment"] == image and sent["messageType"] == "image"
    ack = await alice.expect("message_ack", clientId="a1")

    for token in (bob_token, alice_token):
        shared = download(http, image["id"], token)
        assert shared.status_code == 200 and shared.content == PNG
    assert download(http, image["id"], carol_token).status_code == 404  # as if it did not exist
    assert download(http, image["id"], None).status_code == 401

    # the file is taken: not again in a DM, nor in a room
    _send_file(alice, bob_id, image["id"], "a2", messageType="image")
    assert (await alice.expect_error("conflict"))["type"] == "private_message"
    alice.send(type="join_room", roomId="general")
    await alice.expect("room_joined", roomId="general")
    alice.send(
        type="send_message", roomId="general", content="", messageType="image", fileId=image["id"]
    )
    assert (await alice.expect_error("conflict"))["type"] == "send_message"
    # and a file shared in a room is not sent in a DM
    in_room = upload(http, alice_token, TEXT, "room.txt", "text/plain").json()["file"]
    await post(alice, "general", "", messageType="file", fileId=in_room["id"])
    _send_file(alice, bob_id, in_room["id"], "a3")
    await alice.expect_error("conflict")

    # an image must be one; text with a file, or a file message without one, is refused
    notes = upload(http, alice_token, TEXT, "notes.txt", "text/plain").json()["file"]
    _send_file(alice, bob_id, notes["id"], "a4", messageType="image")
    error = await alice.expect_error("validation")
    assert error["type"] == "private_message" and "not an image" in error["message"]
    _send_file(alice, bob_id, notes["id"], "a5", messageType="text", content="x")
    assert "fileId" in (await alice.expect_error("validation"))["message"]
    alice.send(type="private_message", targetUserId=bob_id, content="x", messageType="file")
    assert "fileId is required" in (await alice.expect_error("validation"))["message"]

    # two sends in a row, before the first is stored: only one of them gets the file
    for client_id in ("a6", "a7"):
        _send_file(alice, bob_id, notes["id"], client_id)
    await alice.expect_error("conflict")
    await alice.expect("message_ack", clientId="a6")
    alice.send(type="private_message", targetUserId=bob_id, content="marker", clientId="a8")
    await bob.expect("private_message", clientId="a8")
    with_notes = [
        e["data"]
        for e in bob.seen
        if e["type"] == "private_message"
        and (e["data"].get("attachment") or {}).get("id") == notes["id"]
    ]
    assert [m["clientId"] for m in with_notes] == ["a6"]
    assert "attachment" not in (await alice.expect("message_ack", clientId="a8"))

    bob.send(type="get_private_history", userId=alice_id)
    messages = (await bob.expect("private_history"))["messages"]
    assert [(m["content"], m.get("messageType"), m.get("attachment")) for m in messages] == [
        ("a cat", "image", image),
        ("", "file", notes),
        ("marker", None, None),
    ]

    # deleting the message withdraws the file, from its URL, the event and history
    alice.send(type="delete_message", messageId=ack["messageId"])
    await bob.expect("private_message_deleted", messageId=ack["messageId"])
    await alice.expect("delete_ack", messageId=ack["messageId"])
    for token in (bob_token, alice_token, carol_token):
        assert download(http, image["id"], token).status_code == 404
    assert download(http, notes["id"], bob_token).status_code == 200
    alice.send(type="get_private_history", userId=bob_id)
    first, *_ = (await alice.expect("private_history"))["messages"]
    assert first["deleted"] is True and "attachment" not in first and first["content"] == ""
    await alice.close()
    await bob.close()


async def test_an_offline_recipient_finds_the_file_after_logging_in(server, http):
    alice_account, bob_account = register(http), register(http)
    alice_id, bob_id = alice_account["user"]["id"], bob_account["user"]["id"]
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    report = upload(http, alice_account["token"], TEXT, "report.txt", "text/plain").json()["file"]
    _send_file(alice, bob_id, report["id"], "r1", content="the quarterly report")
    await alice.expect("message_ack", clientId="r1")

    bob = await ChatClient.connect(server.ws_url)
    (conversation,) = (await bob.authenticate(bob_account["token"]))["conversations"]
    assert conversation["user"]["id"] == alice_id and conversation["unread"] == 1
    last = conversation["lastMessage"]
    assert last["attachment"] == report and last["messageType"] == "file"
    bob.send(type="get_private_history", userId=alice_id)
    (message,) = (await bob.expect("private_history"))["messages"]
    assert message["attachment"] == report and message["id"] == last["id"]
    bob.send(type="search", query="quarterly")
    (result,) = (await bob.expect("search_results"))["results"]
    assert result["message"]["attachment"] == report
    downloaded = download(http, report["id"], bob_account["token"])
    assert downloaded.status_code == 200 and downloaded.content == TEXT
    await alice.close()
    await bob.close()


async def test_a_file_acked_in_a_direct_message_survives_kill_9(make_server):
    server = make_server()
    alice_account, bob_account = register(server.base_url), register(server.base_url)
    bob_id = bob_account["user"]["id"]
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    with httpx.Client(base_url=server.base_url) as http:
        photo = upload(http, alice_account["token"], PNG, "p.png", "image/png").json()["file"]
    _send_file(alice, bob_id, photo["id"], "p1", messageType="image")
    await alice.expect("message_ack", clientId="p1")
    await alice.close()
    server.kill()  # acked means stored: the message and its file together
    server.start()

    carol_token = register(server.base_url)["token"]
    with httpx.Client(base_url=server.base_url) as http:
        assert download(http, photo["id"], bob_account["token"]).content == PNG
        assert download(http, photo["id"], carol_token).status_code == 404
    alice = await ChatClient.connect(server.ws_url, alice_account["token"])
    _send_file(alice, bob_id, photo["id"], "p2", messageType="image")
    await alice.expect_error("conflict")
    await alice.close()
