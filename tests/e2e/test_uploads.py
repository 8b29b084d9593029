"""File sharing end to end: uploads, type sniffing, attachments, access-checked downloads."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import register
from tests.support.client import joined
from tests.support.uploads import PNG, TEXT, download, upload
from tests.support.waiting import wait_until

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)
GIF = b"GIF89a\x01\x00\x01\x00" + bytes(20)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20)


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    """One HTTP client to the ``server`` fixture's server."""
    with httpx.Client(base_url=server.base_url) as client:
        yield client


def temp_files(uploads_dir: Path) -> list[Path]:
    return list(uploads_dir.glob(".upload-*"))


def test_each_kind_is_typed_by_content_and_served_safely(server, http):
    token = register(http)["token"]
    uploads_dir = server.data_dir / "uploads"
    cases = [
        (PNG, "a.png", "image/png", "image/png"),
        (JPEG, "b.jpg", "image/jpeg", "image/jpeg"),
        (GIF, "c.gif", "image/gif", "image/gif"),
        (WEBP, "d.webp", "image/webp", "image/webp"),
        (TEXT, "notes.txt", "text/plain", "application/octet-stream"),
        # declared an image, but the bytes are text: the declaration changes nothing
        (TEXT, "photo.png", "image/png", "application/octet-stream"),
        # a real image declared as something else is still recognised as that image
        (PNG, "e.png", "text/html", "image/png"),
    ]
    for body, name, declared, expected in cases:
        response = upload(http, token, body, name, declared)
        assert response.status_code == 201, response.text
        file = response.json()["file"]
        assert file["name"] == name
        assert file["size"] == len(body)
        assert file["contentType"] == expected, name
        assert file["url"] == f"/api/chat/files/{file['id']}"
        assert (uploads_dir / file["id"]).read_bytes() == body  # stored under its random id

        served = download(http, file["id"], token)
        assert served.status_code == 200
        assert served.content == body
        assert served.headers["content-type"] == expected
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
        disposition = served.headers["content-disposition"]
        if expected.startswith("image/"):
            assert disposition.startswith("inline;")
        else:
            assert disposition.startswith("attachment;")
        assert f'filename="{name}"' in disposition
    assert all(re.fullmatch(r"[0-9a-f]{32}", p.name) for p in uploads_dir.iterdir())


def test_names_are_sanitized_and_bad_requests_refused(server, http):
    token = register(http)["token"]
    response = upload(http, token, PNG, "../../<script>x.png", "image/png")
    assert response.status_code == 201
    file = response.json()["file"]
    assert file["name"] == "_script_x.png"
    served = download(http, file["id"], token)
    assert 'filename="_script_x.png"' in served.headers["content-disposition"]
    assert not (server.data_dir.parent / "<script>x.png").exists()
    assert upload(http, token, PNG, "..\\..\\evil.png").json()["file"]["name"] == ("evil.png")
    assert upload(http, token, PNG, "..").json()["file"]["name"] == "file"

    empty = upload(http, token, b"")
    assert empty.status_code == 400
    assert empty.json()["code"] == "validation"
    for body in (TEXT, b""):
        anonymous = upload(http, None, body)
        assert anonymous.status_code == 401
    assert upload(http, "not-a-token", TEXT).status_code == 401
    assert temp_files(server.data_dir / "uploads") == []
    # an unshared upload is visible to its uploader only; unknown ids are 404
    other = register(http)["token"]
    assert download(http, file["id"], other).status_code == 404
    assert download(http, "0" * 32, token).status_code == 404
    assert download(http, "../config.toml", token).status_code == 404


async def test_size_limit_rate_limit_and_aborted_bodies(make_server):
    server = make_server(uploads={"max_bytes": 1024, "per_user_per_hour": 3})
    with httpx.Client(base_url=server.base_url) as http:
        uploads_dir = server.data_dir / "uploads"
        token = register(http)["token"]

        head = (
            "POST /api/chat/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: image/png\r\n"
        )
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(f"{head}Content-Length: 1025\r\n\r\n".encode() + PNG)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert temp_files(uploads_dir) == []

        # a client that goes away mid-body leaves no temporary file behind
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(f"{head}Content-Length: 1000\r\n\r\n".encode() + PNG)
            await wait_until(lambda: len(temp_files(uploads_dir)) == 1)
        await wait_until(lambda: temp_files(uploads_dir) == [])

        exactly = upload(http, token, PNG + bytes(1024 - len(PNG)), "max.png")
        assert exactly.status_code == 201
        assert exactly.json()["file"]["size"] == 1024

        assert upload(http, token, TEXT).status_code == 201
        limited = upload(http, token, TEXT)
        assert limited.status_code == 429  # the aborted upload counted too: 3 per hour
        assert limited.json()["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) > 0
        assert upload(http, register(http)["token"], TEXT).status_code == 201
        assert temp_files(uploads_dir) == []


async def test_attachments_and_who_may_download(server, http):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    bob, bob_account = await joined(server.ws_url, server.base_url)
    alice_token, bob_token = alice_account["token"], bob_account["token"]
    image = upload(http, alice_token, PNG, "cat.png", "image/png").json()["file"]

    bob.send(
        type="send_message",
        roomId="general",
        content="mine?",
        messageType="image",
        fileId=image["id"],
    )
    await bob.expect_error("not_found")
    alice.send(
        type="send_message",
        roomId="general",
        content="a cat",
        messageType="image",
        fileId=image["id"],
    )
    message = (await bob.expect("new_message"))["message"]
    assert message["messageType"] == "image"
    assert message["attachment"] == image
    # downloadable by a room member as soon as the message is seen
    shared = download(http, image["id"], bob_token)
    assert shared.status_code == 200 and shared.content == PNG
    assert download(http, image["id"], None).status_code == 401
    by_query = http.get(image["url"], params={"token": bob_token})  # never in a URL
    assert by_query.status_code == 401

    alice.send(
        type="send_message",
        roomId="general",
        content="again",
        messageType="image",
        fileId=image["id"],
    )
    await alice.expect_error("conflict")
    # two sends in a row, before the first is stored: still only one of them gets the file
    other = upload(http, alice_token, TEXT, "notes.txt", "text/plain").json()["file"]
    for content in ("one", "two"):
        alice.send(
            type="send_message",
            roomId="general",
            content=content,
            messageType="file",
            fileId=other["id"],
        )
    await alice.expect_error("conflict")
    alice.send(type="send_message", roomId="general", content="marker")
    while (await bob.expect("new_message"))["message"]["content"] != "marker":
        pass
    shared_twice = [
        e
        for e in bob.seen
        if e["type"] == "new_message"
        and (e["data"]["message"].get("attachment") or {}).get("id") == other["id"]
    ]
    assert len(shared_twice) == 1

    alice.send(type="get_room_history", roomId="general")
    history = await alice.expect("room_history", roomId="general")
    assert [m["attachment"] for m in history["messages"] if "attachment" in m] == [image, other]

    # deleting the message withdraws the file with it, from history and from its URL
    alice.send(type="delete_message", messageId=message["id"])
    await bob.expect("message_deleted", messageId=message["id"])
    for token in (bob_token, alice_token):
        assert download(http, image["id"], token).status_code == 404
    alice.send(type="get_room_history", roomId="general")
    history = await alice.expect("room_history", roomId="general")
    assert [m["attachment"] for m in history["messages"] if m.get("attachment")] == [other]
    await alice.close()
    await bob.close()


async def test_files_of_private_rooms_and_ranges(server, http):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    carol_token = register(http)["token"]
    token = alice_account["token"]
    alice.send(type="create_room", name="secret", isPrivate=True)
    room = (await alice.expect("room_created"))["room"]
    alice.send(type="join_room", roomId=room["id"])
    await alice.expect("room_joined", roomId=room["id"])
    file = upload(http, token, TEXT, "plan.txt", "text/plain").json()["file"]
    alice.send(
        type="send_message",
        roomId=room["id"],
        content="the plan",
        messageType="file",
        fileId=file["id"],
    )
    await alice.expect("message_ack")
    hidden = download(http, file["id"], carol_token)
    missing = download(http, "0" * 32, carol_token)
    assert hidden.status_code == missing.status_code == 404  # no telling it exists
    assert hidden.json() == missing.json()
    assert download(http, file["id"], token).status_code == 200

    size = len(TEXT)
    for header, start, end in (
        ("bytes=0-3", 0, 3),
        ("bytes=-4", size - 4, size - 1),
        ("bytes=5-", 5, size - 1),
        ("bytes=5-999", 5, size - 1),
    ):
        part = download(http, file["id"], token, header)
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert part.content == TEXT[start : end + 1]
        assert part.headers["content-disposition"].startswith("attachment;")
    for header in (f"bytes={size}-", "bytes=9-3", "items=0-1", "bytes=-"):
        refused = download(http, file["id"], token, header)
        assert refused.status_code == 416, header
        assert refused.headers["content-range"] == f"bytes */{size}"
    await alice.close()


async def test_upload_quotas_and_the_free_disk_reserve_answer_507(make_server):
    server = make_server(
        uploads={"total_max_bytes": 3000, "per_user_max_bytes": 2000, "min_free_bytes": 1}
    )
    with httpx.Client(base_url=server.base_url) as http:
        alice, bob = register(http)["token"], register(http)["token"]
        assert upload(http, alice, b"a" * 1500).status_code == 201
        over = upload(http, alice, b"a" * 1000)  # alice: 2500 > 2000
        assert over.status_code == 507 and over.json()["code"] == "insufficient_storage"
        assert upload(http, bob, b"b" * 1400).status_code == 201  # everyone: 2900
        full = upload(http, bob, b"b" * 200)  # everyone: 3100 > 3000
        assert full.status_code == 507
        assert upload(http, bob, b"b" * 100).status_code == 201  # exactly 3000 fits
        refused = upload(http, bob, b"b")
        assert refused.status_code == 507 and "quota" in refused.json()["error"]
    assert temp_files(server.data_dir / "uploads") == []  # the refused bodies were not kept

    reserve = make_server(uploads={"min_free_bytes": 2**62})  # more than any disk has free
    with httpx.Client(base_url=reserve.base_url) as http:
        refused = upload(http, register(http)["token"], b"x" * 10)
        assert refused.status_code == 507 and "nearly full" in refused.json()["error"]


async def test_an_uploads_folder_that_fails_is_answered_503_and_logged(server, http):
    token = register(http)["token"]
    uploads = server.data_dir / "uploads"
    uploads.rename(server.data_dir / "moved")
    uploads.write_text("not a folder any more")
    failed = upload(http, token, b"data" * 100)
    assert failed.status_code == 503 and failed.json()["code"] == "storage_unavailable"
    # the line is read from the server's stderr by another thread: it may trail the answer
    await wait_until(lambda: any("upload to" in line and "failed" in line for line in server.log))


async def test_a_body_left_by_a_crash_is_cleaned_at_start(server):
    leftover = server.data_dir / "uploads" / ".upload-0123456789abcdef0123456789abcdef"
    leftover.write_bytes(b"half an upload")
    server.kill()
    server.start()
    assert not leftover.exists()
