"""Search over WebSocket and HTTP: ranked, highlighted, only what the user may see."""

from __future__ import annotations

import httpx
import pytest

from tests.support.accounts import register
from tests.support.client import ChatClient, joined, post, private_room


def _search(server, token: str, **params: object) -> httpx.Response:
    return httpx.get(
        server.base_url + "/api/chat/search",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_search_finds_visible_messages_with_snippets_and_follows_edits(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    outsider_account = register(server.base_url)
    outsider = await ChatClient.connect(server.ws_url, outsider_account["token"])
    public = await post(alice, "general", "The Zebra crossing is closed today")
    secret = await private_room(alice)
    await post(alice, secret, "zebra secret plans")
    alice.send(
        type="private_message",
        targetUserId=outsider_account["user"]["id"],
        content="zebra in a dm",
        clientId="dm1",
    )
    await alice.expect("message_ack", clientId="dm1")

    alice.send(type="search", query="zebra")
    found = await alice.expect("search_results")
    assert found["query"] == "zebra" and found["nextBefore"] is None
    assert {r["message"]["content"] for r in found["results"]} == {
        "The Zebra crossing is closed today",
        "zebra secret plans",
    }
    snippets = {r["snippet"] for r in found["results"]}
    assert "The <mark>Zebra</mark> crossing is closed today" in snippets

    outsider.send(type="search", query="zebra")
    seen = await outsider.expect("search_results")
    assert [r["message"]["id"] for r in seen["results"]] == [public["messageId"]]
    outsider.send(type="search", query="zebra", roomId=secret)
    await outsider.expect_error("not_found")
    response = _search(server, outsider_account["token"], q="secret plans")
    assert response.status_code == 200 and response.json()["results"] == []

    alice.send(type="edit_message", messageId=public["messageId"], content="a giraffe now")
    await alice.expect("message_edited")
    await post(alice, "general", "sync")  # the edit is committed before this is acked
    response = _search(server, alice_account["token"], q="giraffe", roomId="general")
    assert [r["message"]["id"] for r in response.json()["results"]] == [public["messageId"]]
    assert response.json()["results"][0]["message"]["edited"] is True
    assert _search(server, alice_account["token"], q="crossing").json()["results"] == []

    alice.send(type="delete_message", messageId=public["messageId"])
    await alice.expect("message_deleted")
    await post(alice, "general", "sync again")
    assert _search(server, alice_account["token"], q="giraffe").json()["results"] == []


async def test_search_pages_newest_first_with_next_before(server):
    alice, alice_account = await joined(server.ws_url, server.base_url)
    acks = [await post(alice, "general", f"needle number {n}") for n in range(5)]
    page = _search(server, alice_account["token"], q="needle", limit=2).json()
    assert {r["message"]["id"] for r in page["results"]} == {a["messageId"] for a in acks[3:]}
    assert page["nextBefore"] == acks[3]["messageId"]
    rest = _search(server, alice_account["token"], q="needle", before=page["nextBefore"], limit=3)
    assert {r["message"]["id"] for r in rest.json()["results"]} == {
        a["messageId"] for a in acks[:3]
    }


@pytest.mark.parametrize(
    "query", ['"', "AND", "zebra OR", "(", "NEAR(a b)", "*", "a:b", "-x", "col:zebra", "^x"]
)
async def test_fts_syntax_in_queries_never_fails(server, query):
    account = register(server.base_url)
    response = _search(server, account["token"], q=query)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["code"] == "invalid_query"


async def test_bad_search_requests_get_clear_errors(server):
    alice, account = await joined(server.ws_url, server.base_url)
    for query, code in (("!!!", "invalid_query"), ("", "invalid_query"), ("x" * 201, "validation")):
        alice.send(type="search", query=query)
        error = await alice.expect_error(code)
        assert error["type"] == "search"
    assert _search(server, account["token"], q="...").json()["code"] == "invalid_query"
    assert _search(server, account["token"], q="x", limit="lots").json()["field"] == "limit"
    assert _search(server, account["token"]).status_code == 400
    assert httpx.get(server.base_url + "/api/chat/search?q=x").status_code == 401
    alice.send(type="ping")
    await alice.expect("pong")
