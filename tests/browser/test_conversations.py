"""The conversation features of issue 15 in Chromium, against the real server: the list from
`authenticated` (unread and mention badges, DMs received while offline), read markers
across tabs, the "new messages" divider, reactions, mentions, threads, search, presence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import websocket
from chatpage import (
    Pair,
    Person,
    SignUp,
    create_room,
    message,
    open_room,
    post_as_bot,
    send,
    unique_name,
)
from playwright.sync_api import expect

from tests.support.accounts import register

PENDING = re.compile(r"\bpending\b")


def go_away(person: Person) -> None:
    """Leave the page: the person's last connection ends, they are offline."""
    person.page.goto("about:blank")


def dm_button(person: Person, partner: Person):
    return person.page.locator(f'#dm-list .dm[data-user-id="{partner.user_id}"]')


def room_button(person: Person, room: str):
    return person.page.locator("#room-list .room", has_text=room)


def test_a_dm_sent_while_offline_shows_in_a_fresh_browser(
    sign_up: SignUp, screenshots: Path
) -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")  # both land in General
    bob_in_general = alice.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"]')
    expect(bob_in_general.locator(".presence.online")).to_have_count(1)
    go_away(bob)
    # Offline members stay listed, as offline with their last seen time.
    expect(bob_in_general.locator(".presence.offline")).to_have_count(1)
    expect(bob_in_general.locator(".last-seen")).to_contain_text("last seen")

    bob_in_general.locator(".member-name").click()
    expect(alice.page.locator("#current-room-name")).to_have_text(f"@ {bob.username}")
    send(alice, "are you there?")
    expect(message(alice, "are you there?")).not_to_have_class(PENDING)

    bob_again = sign_up("bob", existing=bob.username)
    dm = dm_button(bob_again, alice)
    expect(dm.locator(".badge")).to_have_text("1")
    expect(dm.locator(".presence.online")).to_have_count(1)
    bob_again.page.screenshot(path=str(screenshots / "offline-dm.png"))
    dm.click()
    expect(message(bob_again, "are you there?")).to_have_count(1)
    expect(dm.locator(".badge")).to_have_count(0)
    # Alice's client learns that Bob read it.
    expect(message(alice, "are you there?")).to_have_class(re.compile(r"\bseen\b"))
    alice.page.reload()  # told again when the conversation's history is fetched
    dm_button(alice, bob).click()
    expect(message(alice, "are you there?")).to_have_class(re.compile(r"\bseen\b"))


def test_unread_mentions_divider_and_read_markers(
    sign_up: SignUp, pair: Pair, screenshots: Path
) -> None:
    alice, bob, room = pair
    send(alice, "seen before")
    expect(message(bob, "seen before")).to_have_count(1)
    go_away(bob)

    send(alice, "first unseen")
    send(alice, f"second unseen, @{bob.username} look")
    send(alice, "third unseen")
    expect(message(alice, "third unseen")).not_to_have_class(PENDING)

    tab1 = sign_up("bob", existing=bob.username, notifications=True)
    expect(room_button(tab1, room).locator(".badge:not(.mentions)")).to_have_text("3")
    expect(room_button(tab1, room).locator(".badge.mentions")).to_have_text("@1")
    tab1.page.screenshot(path=str(screenshots / "unread-badges.png"))
    tab2 = sign_up("bob", existing=bob.username)
    expect(room_button(tab2, room).locator(".badge:not(.mentions)")).to_have_text("3")

    open_room(tab1, room)
    divider = tab1.page.locator("#messages .new-divider")
    expect(divider).to_have_text("New messages")
    after_divider = tab1.page.locator("#messages .new-divider + .message .content")
    expect(after_divider).to_have_text("first unseen")
    expect(message(tab1, f"second unseen, @{bob.username} look")).to_have_class(
        re.compile(r"\bmentions-me\b")
    )
    expect(room_button(tab1, room).locator(".badge")).to_have_count(0)
    # The read marker clears the other tab's badge.
    expect(room_button(tab2, room).locator(".badge")).to_have_count(0)

    # A mention in a room that is not on screen raises a notification.
    open_room(tab1, "General")
    send(alice, f"@{bob.username} ping")
    expect(room_button(tab1, room).locator(".badge.mentions")).to_have_text("@1")
    tab1.page.wait_for_function(
        f"() => window.notified.includes('{alice.username} mentioned you in #{room}')"
    )
    # Clicking it opens the room at that message.
    tab1.page.evaluate("window.notifications.at(-1).dispatchEvent(new Event('click'))")
    expect(tab1.page.locator("#current-room-name")).to_have_text(f"# {room}")
    expect(message(tab1, f"@{bob.username} ping")).to_be_in_viewport()


def test_reactions_with_the_emoji_picker(pair: Pair, screenshots: Path) -> None:
    alice, bob, _ = pair
    send(bob, "react to this")
    theirs = message(alice, "react to this")
    expect(theirs).to_have_count(1)
    theirs.hover()
    theirs.locator(".action.react").click()
    expect(alice.page.locator("#context-menu .emoji-grid")).to_be_visible()
    alice.page.screenshot(path=str(screenshots / "emoji-picker.png"))
    alice.page.get_by_role("menuitem", name="React with 👍").click()

    chip = message(bob, "react to this").locator(".reaction[data-emoji='👍']")
    expect(chip.locator(".count")).to_have_text("1")
    expect(chip).to_have_attribute("aria-pressed", "false")
    chip.click()
    expect(chip.locator(".count")).to_have_text("2")
    expect(chip).to_have_attribute("aria-pressed", "true")
    alice_chip = theirs.locator(".reaction[data-emoji='👍']")
    expect(alice_chip.locator(".count")).to_have_text("2")
    alice_chip.click()
    expect(chip.locator(".count")).to_have_text("1")
    expect(alice_chip).to_have_attribute("aria-pressed", "false")
    bob.page.screenshot(path=str(screenshots / "reactions.png"))


def test_threads_open_in_the_side_panel(pair: Pair, screenshots: Path) -> None:
    alice, bob, _ = pair
    send(alice, "start a thread")
    parent = message(bob, "start a thread")
    parent.hover()
    parent.locator(".action.reply").click()
    send(bob, "first reply")
    link = message(alice, "start a thread").locator(".thread-link")
    expect(link).to_have_text("1 reply")

    link.click()
    panel = alice.page.locator("#side-panel")
    expect(panel).to_be_visible()
    expect(panel.locator(".message .content")).to_have_text(["start a thread", "first reply"])
    alice.page.fill("#thread-input", "second reply")
    alice.page.press("#thread-input", "Enter")
    expect(panel.locator(".message .content")).to_have_text(
        ["start a thread", "first reply", "second reply"]
    )
    expect(message(bob, "start a thread").locator(".thread-link")).to_have_text("2 replies")
    alice.page.screenshot(path=str(screenshots / "thread.png"))

    # A deleted reply leaves the thread and its count.
    reply = message(bob, "first reply")
    reply.hover()
    reply.locator(".action.delete").click()
    bob.page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(panel.locator(".message .content")).to_have_text(["start a thread", "second reply"])
    expect(message(alice, "start a thread").locator(".thread-link")).to_have_text("1 reply")


def test_search_jumps_to_the_message_in_context(
    sign_up: SignUp, module_server, screenshots: Path
) -> None:
    alice = sign_up("alice")
    room = unique_name("find")
    create_room(alice, room)
    word = "zebra" + unique_name("x").split("_")[1]
    send(alice, f"the {word} was here")
    expect(message(alice, f"the {word} was here")).not_to_have_class(PENDING)
    room_id = alice.page.locator("#room-list .room.active").get_attribute("data-room-id")
    post_as_bot(module_server, room_id, 60)  # the match is older than the first page

    bob = sign_up("bob")
    bob.page.fill("#search-input", word)
    bob.page.press("#search-input", "Enter")
    result = bob.page.locator("#search-results .search-result")
    expect(result).to_have_count(1)
    expect(result.locator("mark")).to_have_text(re.compile(word, re.IGNORECASE))
    bob.page.screenshot(path=str(screenshots / "search.png"))
    result.click()
    expect(bob.page.locator("#current-room-name")).to_have_text(f"# {room}")
    found = message(bob, f"the {word} was here")
    expect(found).to_be_in_viewport()
    expect(found).to_have_class(re.compile(r"\bflash\b"))


def test_direct_messages_reply_edit_delete_and_react(pair: Pair) -> None:
    alice, bob, _ = pair
    alice.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"] .member-name').click()
    send(alice, "a dm to answer")
    dm_button(bob, alice).click()
    theirs = message(bob, "a dm to answer")
    theirs.hover()
    theirs.locator(".action.reply").click()
    send(bob, "the answer")
    expect(message(alice, "the answer").locator(".reply-quote")).to_contain_text("a dm to answer")

    mine = message(alice, "a dm to answer")
    mine.hover()
    mine.locator(".action.edit").click()
    alice.page.fill(".edit-input", "a dm, edited")
    alice.page.press(".edit-input", "Enter")
    expect(message(bob, "a dm, edited").locator(".edited")).to_have_text("(edited)")

    answer = message(alice, "the answer")
    answer.hover()
    expect(answer.locator(".action.delete")).to_have_count(0)  # not Alice's to delete
    answer.locator(".action.react").click()
    alice.page.get_by_role("menuitem", name="React with 🎉").click()
    party = message(bob, "the answer").locator(".reaction[data-emoji='🎉'] .count")
    expect(party).to_have_text("1")

    edited = message(alice, "a dm, edited")
    edited.hover()
    edited.locator(".action.delete").click()
    alice.page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(bob.page.locator("#messages .message.deleted .content")).to_have_text("message deleted")


def test_search_on_a_phone_covers_the_screen_and_closes(sign_up: SignUp, screenshots: Path) -> None:
    phone = sign_up("phone", viewport={"width": 375, "height": 667}, touch=True)
    page = phone.page
    page.click("#menu-button")
    create_room(phone, unique_name("small"))
    word = "walrus" + unique_name("w").split("_")[1]
    send(phone, f"a {word} on a phone")
    expect(message(phone, f"a {word} on a phone")).not_to_have_class(PENDING)
    page.click("#menu-button")
    page.fill("#search-input", word)
    page.press("#search-input", "Enter")
    panel = page.locator("#side-panel")
    expect(panel.locator(".search-result")).to_have_count(1)
    box = panel.bounding_box()
    assert box is not None and box["width"] == 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(screenshots / "mobile-search.png"))
    panel.locator(".search-result").tap()
    expect(panel).to_be_hidden()
    expect(message(phone, f"a {word} on a phone")).to_be_in_viewport()


def test_read_markers_are_throttled_while_messages_stream_in(
    pair: Pair, sign_up: SignUp, module_server
) -> None:
    alice, bob, room = pair
    marks: list[str] = []
    bob.page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent", lambda frame: marks.append(frame) if "mark_read" in frame else None
        ),
    )
    bob.page.reload()  # the new socket is watched
    expect(bob.page.locator("#current-room-name")).to_have_text(f"# {room}")
    room_id = alice.page.locator("#room-list .room.active").get_attribute("data-room-id")
    post_as_bot(module_server, room_id, 30)
    expect(message(bob, "m30")).to_have_count(1)
    # The last marker follows the burst: the next sign-in has nothing unread there.
    fresh = sign_up("bob", existing=bob.username)
    expect(room_button(fresh, room)).to_be_visible()
    expect(room_button(fresh, room).locator(".badge")).to_have_count(0, timeout=10_000)
    assert 1 <= len(marks) < 10, marks


def test_room_read_receipts_show_who_has_seen_what(
    pair: Pair, sign_up: SignUp, screenshots: Path
) -> None:
    alice, bob, room = pair
    carol = sign_up("carol")
    open_room(carol, room)
    send(alice, "who saw this")
    expect(message(bob, "who saw this")).to_have_count(1)
    expect(message(carol, "who saw this")).to_have_count(1)
    seen = alice.page.locator("#messages .message + .read-by")
    names = f"({bob.username} and {carol.username}|{carol.username} and {bob.username})"
    expect(seen).to_have_text(re.compile(f"^Seen by {names}$"))

    open_room(carol, "General")  # carol stops reading the room
    send(alice, "and this one")
    expect(message(bob, "and this one")).to_have_count(1)
    expect(seen).to_have_text([f"Seen by {carol.username}", f"Seen by {bob.username}"])
    under_newest = alice.page.locator("#messages .message:has-text('and this one') + .read-by")
    expect(under_newest).to_have_text(f"Seen by {bob.username}")
    alice.page.screenshot(path=str(screenshots / "room-read-receipts.png"))
    # A fresh page is told on joining how far the others have read.
    alice.page.reload()
    expect(seen).to_have_text([f"Seen by {carol.username}", f"Seen by {bob.username}"])


def test_dm_presence_dots_follow_a_peer_in_no_shared_room(
    sign_up: SignUp, module_server, screenshots: Path
) -> None:
    alice = sign_up("alice")
    peer = register(module_server.base_url, unique_name("loner"))  # never joins a room

    def connect() -> websocket.WebSocket:
        socket = websocket.create_connection(module_server.ws_url, timeout=10)
        socket.send(json.dumps({"type": "authenticate", "token": peer["token"]}))
        return socket

    socket = connect()
    socket.send(
        json.dumps({"type": "private_message", "targetUserId": alice.user_id, "content": "psst"})
    )
    dot = alice.page.locator(f'#dm-list .dm[data-user-id="{peer["user"]["id"]}"] .presence')
    expect(dot).to_have_class(re.compile(r"\bonline\b"))
    socket.close()
    expect(dot).to_have_class(re.compile(r"\boffline\b"))
    alice.page.screenshot(path=str(screenshots / "dm-presence-offline.png"))
    socket = connect()
    expect(dot).to_have_class(re.compile(r"\bonline\b"))
    socket.close()
