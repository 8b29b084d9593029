"""End-to-end tests of the browser client against a real fastchat server and Chromium."""

from __future__ import annotations

import base64
import re
from pathlib import Path

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
from playwright.sync_api import WebSocketRoute, expect

from tests.support.accounts import PASSWORD, create_account

# A one-pixel red PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
XSS = "<img src=x onerror=alert(1)>"
OWN = re.compile(r"\bown\b")
PENDING = re.compile(r"\bpending\b")


def test_login_errors_reload_and_logout(sign_up: SignUp) -> None:
    person = sign_up("carol")
    page = person.page
    page.reload()
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#chat-view")).to_be_visible()

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("localStorage.getItem('fastchat.session')") is None

    page.fill("#login-username", person.username)
    page.fill("#login-password", "wrong password!")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-form .form-error")).to_have_text("Invalid credentials")

    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected")

    page.click("#logout")
    page.click("#show-register")
    page.fill("#register-username", person.username)
    page.fill("#register-email", "other@example.com")
    page.fill("#register-password", PASSWORD)
    page.click("#register-form button[type=submit]")
    expect(page.locator("#register-form .form-error")).not_to_be_empty()
    expect(page.locator("#chat-view")).to_be_hidden()


def test_presence_typing_messages_edit_delete(pair: Pair, screenshots: Path) -> None:
    alice, bob, _ = pair
    bob_member = alice.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"]')
    expect(bob_member.locator(".presence.online")).to_be_visible()

    bob.page.type("#message-input", "hel")
    expect(alice.page.locator("#typing-indicator")).to_have_text(f"{bob.username} is typing…")

    bob.page.fill("#message-input", "hello alice")
    bob.page.press("#message-input", "Enter")
    expect(alice.page.locator("#typing-indicator")).to_have_text("")
    received = message(alice, "hello alice")
    expect(received).to_have_count(1)
    expect(received.locator(".author")).to_have_text(bob.username)
    expect(received).not_to_have_class(OWN)
    own = message(bob, "hello alice")
    expect(own).to_have_class(OWN)
    expect(own).not_to_have_class(PENDING)
    expect(own).not_to_have_attribute("data-seq", "")

    send(alice, "hi bob")
    reply_to = message(bob, "hi bob")
    reply_to.hover()
    reply_to.locator(".action.reply").click()
    expect(bob.page.locator("#reply-bar")).to_be_visible()
    send(bob, "a reply")
    expect(message(alice, "a reply").locator(".reply-quote")).to_contain_text("hi bob")
    expect(bob.page.locator("#reply-bar")).to_be_hidden()

    own.hover()
    own.locator(".action.edit").click()
    bob.page.fill(".edit-input", "hello alice, edited")
    bob.page.press(".edit-input", "Enter")
    edited = message(alice, "hello alice, edited")
    expect(edited.locator(".edited")).to_have_text("(edited)")

    mine = message(bob, "hello alice, edited")
    mine.hover()
    mine.locator(".action.delete").click()
    bob.page.locator("#dialog").get_by_role("button", name="Delete").click()
    deleted = alice.page.locator("#messages .message.deleted .content")
    expect(deleted).to_have_text("message deleted")
    expect(message(alice, "hello alice, edited")).to_have_count(0)

    # Alice may not edit or delete Bob's messages.
    theirs = message(alice, "a reply")
    theirs.hover()
    expect(theirs.locator(".action.edit")).to_have_count(0)
    expect(theirs.locator(".action.delete")).to_have_count(0)
    alice.page.screenshot(path=str(screenshots / "desktop-room.png"))

    bob.page.goto("about:blank")
    expect(bob_member.locator(".presence.online")).to_have_count(0)


def test_direct_messages_and_unread_badges(pair: Pair, screenshots: Path) -> None:
    alice, bob, room = pair
    alice.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"] .member-name').click()
    expect(alice.page.locator("#current-room-name")).to_have_text(f"@ {bob.username}")
    send(alice, "psst, bob")
    expect(message(alice, "psst, bob")).not_to_have_class(PENDING)

    dm = bob.page.locator(f'#dm-list .dm[data-user-id="{alice.user_id}"]')
    expect(dm.locator(".badge")).to_have_text("1")
    dm.click()
    expect(message(bob, "psst, bob")).to_have_count(1)
    expect(dm.locator(".badge")).to_have_count(0)
    send(bob, "yes?")
    expect(message(alice, "yes?")).to_have_count(1)

    # Bob is in the DM view: a room message counts as unread for the room.
    open_room(alice, room)
    send(alice, "back in the room")
    room_button = bob.page.locator("#room-list .room", has_text=room)
    expect(room_button.locator(".badge")).to_have_text("1")
    bob.page.screenshot(path=str(screenshots / "desktop-dm.png"))
    room_button.click()
    expect(room_button.locator(".badge")).to_have_count(0)
    expect(message(bob, "back in the room")).to_have_count(1)


def test_markup_is_shown_as_text(pair: Pair) -> None:
    alice, bob, _ = pair
    dialogs: list[str] = []
    bob.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    send(alice, XSS)
    shown = bob.page.locator("#messages .message .content", has_text="onerror")
    expect(shown).to_have_text(XSS)
    assert bob.page.locator("#messages img").count() == 0
    create_room(alice, "<b>bold</b>")
    expect(bob.page.locator("#room-list .room", has_text="<b>bold</b>")).to_have_count(1)
    assert bob.page.locator("#room-list b").count() == 0
    assert dialogs == []


def test_image_upload_is_shown_inline(pair: Pair, tmp_path: Path) -> None:
    alice, bob, _ = pair
    picture = tmp_path / "dot.png"
    picture.write_bytes(PNG)
    alice.page.set_input_files("#file-input", str(picture))
    image = bob.page.locator("#messages .message img.thumb")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("alt", "dot.png")
    bob.page.wait_for_function(
        "() => { const img = document.querySelector('#messages img.thumb');"
        " return img && img.src.startsWith('blob:') && img.complete && img.naturalWidth === 1; }"
    )

    document = tmp_path / "notes.txt"
    document.write_text("some notes\n")
    alice.page.set_input_files("#file-input", str(document))
    card = bob.page.locator("#messages .file-card", has_text="notes.txt")
    expect(card.locator(".file-size")).to_have_text("11 B")
    expect(card.locator("a.download")).to_have_count(1)


def test_mobile_layout(sign_up: SignUp, screenshots: Path) -> None:
    person = sign_up("mobi", viewport={"width": 375, "height": 667})
    page = person.page
    page.click("#menu-button")
    create_room(person, unique_name("m"))
    send(person, "hello from a small screen")
    expect(message(person, "hello from a small screen")).to_have_count(1)
    expect(page.locator("#sidebar")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(screenshots / "mobile-room.png"))

    page.click("#menu-button")
    expect(page.locator("#sidebar")).to_be_visible()
    slid_in = "() => getComputedStyle(document.querySelector('#sidebar')).transform == 'none'"
    page.wait_for_function(slid_in)
    page.screenshot(path=str(screenshots / "mobile-menu.png"))
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).to_be_hidden()


class Relay:
    """Passes a page's WebSocket through; can hold back its sends, cut the line, refuse."""

    def __init__(self) -> None:
        self.pairs: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.hold_sends = False
        self.refuse = False

    def __call__(self, ws: WebSocketRoute) -> None:
        if self.refuse:
            ws.close(code=1013, reason="try again later")
            return
        server = ws.connect_to_server()

        def from_page(frame: str | bytes) -> None:
            if not (self.hold_sends and isinstance(frame, str) and '"send_message"' in frame):
                server.send(frame)

        ws.on_message(from_page)
        self.pairs.append((ws, server))

    def cut(self) -> None:
        """Drop the current connection on both sides, as a network failure would."""
        page_side, server_side = self.pairs[-1]
        server_side.close()
        page_side.close(code=1012, reason="test cut")


def test_reconnect_catches_up_and_resends(sign_up: SignUp) -> None:
    relay = Relay()
    alice = sign_up("alice", route_ws=relay)
    bob = sign_up("bob")
    room = unique_name("room")
    create_room(alice, room)
    open_room(bob, room)
    send(bob, "before the cut")
    expect(message(alice, "before the cut")).to_have_count(1)

    relay.hold_sends = True
    send(alice, "sent into the void")
    lost = message(alice, "sent into the void")
    expect(lost).to_have_class(PENDING)

    relay.refuse = True
    relay.cut()
    status = alice.page.locator("#connection-status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    send(bob, "while you were away")
    expect(message(bob, "while you were away")).not_to_have_class(PENDING)
    expect(message(alice, "while you were away")).to_have_count(0)
    relay.hold_sends = False
    relay.refuse = False
    expect(status).to_have_attribute("data-state", "connected", timeout=15_000)

    expect(message(alice, "while you were away")).to_have_count(1)
    expect(lost).not_to_have_class(PENDING)
    expect(message(bob, "sent into the void")).to_have_count(1)
    expect(message(alice, "before the cut")).to_have_count(1)
    assert len(relay.pairs) == 2


def menu_items(person: Person, user: Person) -> list[str]:
    """Open the actions menu of `user` in the member list and read its items."""
    page = person.page
    page.locator(f'#member-list .member[data-user-id="{user.user_id}"] .more').click()
    expect(page.locator("#context-menu")).to_be_visible()
    items = page.locator("#context-menu [role=menuitem]").all_inner_texts()
    page.keyboard.press("Escape")
    expect(page.locator("#context-menu")).to_be_hidden()
    return items


def test_moderation_actions_follow_roles(sign_up: SignUp, module_server) -> None:
    boss = sign_up("boss", existing=create_account(module_server, "admin", unique_name("boss")))
    alice = sign_up("alice")
    bob = sign_up("bob")
    room = unique_name("mod")
    create_room(alice, room)
    open_room(bob, room)
    open_room(boss, room)
    boss_member = alice.page.locator(f'#member-list .member[data-user-id="{boss.user_id}"]')
    expect(boss_member).to_be_visible()

    assert menu_items(alice, bob) == ["Send direct message"]
    assert {"Kick from room", "Ban", "Make moderator"} <= set(menu_items(boss, bob))

    send(alice, "moderate me")
    target = message(bob, "moderate me")
    target.hover()
    expect(target.locator(".action.delete")).to_have_count(0)

    boss.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"] .more').click()
    boss.page.get_by_role("menuitem", name="Make moderator").click()
    expect(bob.page.locator("#toast")).to_have_text("Your role is now moderator")

    items = menu_items(bob, alice)
    assert "Kick from room" in items and "Ban" not in items
    boss_seen_by_bob = bob.page.locator(f'#member-list .member[data-user-id="{boss.user_id}"]')
    expect(boss_seen_by_bob.locator(".role.admin")).to_be_visible()
    assert menu_items(bob, boss) == ["Send direct message"]
    target.hover()
    target.locator(".action.delete").click()
    bob.page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(alice.page.locator("#messages .message.deleted")).to_have_count(1)

    boss.page.locator(f'#member-list .member[data-user-id="{alice.user_id}"] .more').click()
    boss.page.get_by_role("menuitem", name="Kick from room").click()
    boss.page.fill("#dialog-reason", "too loud")
    boss.page.locator("#dialog").get_by_role("button", name="Kick").click()
    expect(alice.page.locator("#toast")).to_contain_text("too loud")
    expect(alice.page.locator("#current-room-name")).to_have_text("Select a room")
    expect(boss.page.locator("#toast")).to_have_text(f"Removed {alice.username} from {room}")


def test_history_pages_in_on_scroll(sign_up: SignUp, module_server) -> None:
    alice = sign_up("alice")
    room = unique_name("hist")
    create_room(alice, room)
    room_id = alice.page.locator("#room-list .room.active").get_attribute("data-room-id")
    post_as_bot(module_server, room_id, 60)

    bob = sign_up("bob")
    open_room(bob, room)
    shown = bob.page.locator("#messages .message")
    expect(shown).to_have_count(50)
    expect(shown.first.locator(".content")).to_have_text("m11")
    expect(shown.last.locator(".content")).to_have_text("m60")
    bob.page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
    expect(shown).to_have_count(60)
    expect(shown.first.locator(".content")).to_have_text("m01")
    assert [int(s) for s in shown.evaluate_all("els => els.map(e => e.dataset.seq)")] == list(
        range(1, 61)
    )
    # One author, one minute: a single header, and a single day separator.
    expect(bob.page.locator("#messages .message:not(.continued) .author")).to_have_count(1)
    expect(bob.page.locator("#messages .day-separator")).to_have_count(1)
