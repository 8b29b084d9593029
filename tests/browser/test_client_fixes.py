"""The browser client's defects of issue 15, each fixed and checked in Chromium: the default
room, invites and leaving private rooms, moderation dialogs, toasts and unban, the notices'
dates, links, sizes, the empty room, images that keep the view at the bottom, touch screens."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatpage import (
    Person,
    SignUp,
    create_room,
    message,
    open_room,
    send,
    solid_png,
    unique_name,
)
from playwright.sync_api import expect

from tests.support.accounts import create_account
from tests.support.server import ServerProcess

UPLOAD_LIMIT = 64 * 1024
THIS_YEAR = str(datetime.datetime.now().year)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a small upload limit, so that a refused upload is cheap."""
    directory = tmp_path_factory.mktemp("fixes-server")
    server = ServerProcess.configured(directory, uploads={"max_bytes": UPLOAD_LIMIT}).start()
    yield server
    server.kill()


def member_menu(person: Person, user: Person, item: str) -> None:
    """Open the actions of `user` in the member list and pick `item`."""
    person.page.locator(f'#member-list .member[data-user-id="{user.user_id}"] .more').click()
    person.page.get_by_role("menuitem", name=item).click()


def test_new_users_land_in_general(sign_up: SignUp) -> None:
    first = sign_up("early")
    create_room(first, "Aardvarks")  # sorts before "General"
    newcomer = sign_up("newcomer")
    expect(newcomer.page.locator("#current-room-name")).to_have_text("# General")
    expect(newcomer.page.locator("#room-list .room.active")).to_have_attribute(
        "data-room-id", "general"
    )


def test_invite_to_a_private_room_and_leave_it(sign_up: SignUp, screenshots: Path) -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")  # both land in General: Alice has seen Bob
    room = unique_name("secret")
    page = alice.page
    page.click("#create-room summary")
    page.fill("#room-name", room)
    page.check("#room-private")
    page.click("#create-room-form button[type=submit]")
    expect(page.locator("#current-room-name")).to_have_text(f"# {room}")
    expect(bob.page.locator("#room-list .room", has_text=room)).to_have_count(0)

    page.click("#invite-button")
    dialog = page.locator("#dialog")
    expect(dialog).to_be_visible()
    page.fill("#dialog-filter", bob.username[:6])
    dialog.get_by_label(bob.username).check()
    page.screenshot(path=str(screenshots / "invite-dialog.png"))
    dialog.get_by_role("button", name="Invite").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#toast")).to_have_text(f"Invited {bob.username} to {room}")
    expect(bob.page.locator("#toast")).to_have_text(f"You were invited to {room}")

    open_room(bob, room)
    send(bob, "thanks for the invite")
    expect(message(alice, "thanks for the invite")).to_have_count(1)
    bob.page.click("#leave-room")
    expect(bob.page.locator("#current-room-name")).to_have_text("Select a room")
    # Leaving keeps the membership: the room stays listed, and opens again.
    listed = bob.page.locator("#room-list .room", has_text=room)
    expect(listed).to_have_count(1)
    open_room(bob, room)
    expect(message(bob, "thanks for the invite")).to_have_count(1)


def test_moderation_dialogs_toasts_dates_and_unban(
    sign_up: SignUp, module_server: ServerProcess, screenshots: Path
) -> None:
    boss = sign_up("boss", existing=create_account(module_server, "admin", unique_name("boss")))
    bob = sign_up("bob")
    room = unique_name("mod")
    create_room(boss, room)
    open_room(bob, room)
    send(bob, "something rude")
    expect(message(boss, "something rude")).to_have_count(1)

    member_menu(boss, bob, "Mute 1 hour")
    expect(boss.page.locator("#toast")).to_have_text(f"Muted {bob.username} in {room}")
    muted = bob.page.locator("#toast")
    expect(muted).to_contain_text(f"You are muted in {room} until")
    expect(muted).to_contain_text(THIS_YEAR)
    expect(muted).not_to_contain_text("1970")

    member_menu(boss, bob, "Kick from room")
    dialog = boss.page.locator("#dialog")
    expect(dialog).to_be_visible()
    boss.page.fill("#dialog-reason", "too loud")
    boss.page.screenshot(path=str(screenshots / "kick-dialog.png"))
    dialog.get_by_role("button", name="Kick").click()
    expect(bob.page.locator("#toast")).to_contain_text("too loud")
    expect(bob.page.locator("#current-room-name")).to_have_text("Select a room")
    expect(boss.page.locator("#toast")).to_have_text(f"Removed {bob.username} from {room}")

    # A cancelled dialog sends nothing.
    author = message(boss, "something rude").locator(".author")
    author.click()
    boss.page.get_by_role("menuitem", name="Ban", exact=True).click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(bob.page.locator("#connection-status")).to_have_attribute("data-state", "connected")

    author.click()
    boss.page.get_by_role("menuitem", name="Ban", exact=True).click()
    boss.page.fill("#dialog-reason", "spam")
    boss.page.select_option("#dialog-duration", label="1 day")
    dialog.get_by_role("button", name="Ban").click()
    notice = bob.page.locator("#login-form .form-error")
    expect(notice).to_contain_text("You are banned until")
    expect(notice).to_contain_text(THIS_YEAR)
    expect(notice).to_contain_text("spam")
    expect(notice).not_to_contain_text("1970")
    expect(boss.page.locator("#toast")).to_have_text(f"Banned {bob.username}")

    author.click()
    boss.page.get_by_role("menuitem", name="Unban").click()
    dialog.get_by_role("button", name="Unban").click()
    expect(boss.page.locator("#toast")).to_have_text(f"Unbanned {bob.username}")
    sign_up("bob", existing=bob.username)  # waits for the live connection: not banned


def test_links_sizes_and_the_empty_room(sign_up: SignUp, tmp_path: Path) -> None:
    alice = sign_up("alice")
    create_room(alice, unique_name("empty"))
    empty = alice.page.locator("#messages .empty-state")
    expect(empty).to_have_text("No messages yet. Say hello!")

    send(alice, "docs at https://example.com/guide?x=1. read them")
    expect(empty).to_have_count(0)
    link = alice.page.locator("#messages .message .content a")
    expect(link).to_have_attribute("href", "https://example.com/guide?x=1")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_text("https://example.com/guide?x=1")

    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    alice.page.set_input_files("#file-input", str(big))
    expect(alice.page.locator("#toast")).to_have_text("Upload failed: Body too large (limit 64 KB)")


def test_an_image_keeps_the_view_at_the_bottom(sign_up: SignUp, tmp_path: Path) -> None:
    alice = sign_up("alice")
    bob = sign_up("bob", viewport={"width": 900, "height": 500})
    room = unique_name("pics")
    create_room(alice, room)
    open_room(bob, room)
    for n in range(12):
        send(alice, f"line {n}")
    expect(message(bob, "line 11")).to_have_count(1)
    picture = tmp_path / "tall.png"
    picture.write_bytes(solid_png(200, 220))
    alice.page.set_input_files("#file-input", str(picture))
    bob.page.wait_for_function(
        "() => { const img = document.querySelector('#messages img.thumb');"
        " return img && img.complete && img.naturalHeight === 220; }"
    )
    at_bottom = (
        "() => { const box = document.querySelector('#messages');"
        " return box.scrollHeight - box.scrollTop - box.clientHeight < 2; }"
    )
    bob.page.wait_for_function(at_bottom)
    assert bob.page.evaluate("document.querySelector('#messages img.thumb').offsetHeight") > 200


def test_touch_screens_show_actions_on_a_tap(sign_up: SignUp, screenshots: Path) -> None:
    phone = sign_up("phone", viewport={"width": 375, "height": 667}, touch=True)
    page = phone.page
    assert page.evaluate("matchMedia('(hover: none)').matches")
    page.click("#menu-button")
    create_room(phone, unique_name("tap"))
    send(phone, "tap me")
    mine = message(phone, "tap me")
    expect(mine).not_to_have_class(re.compile(r"\bpending\b"))
    actions = mine.locator(".actions")
    expect(actions).to_be_hidden()
    mine.locator(".content").tap()
    expect(actions).to_be_visible()
    expect(actions.locator(".action.reply")).to_be_visible()
    expect(actions.locator(".action.edit")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(screenshots / "mobile-actions.png"))
    mine.locator(".content").tap()
    expect(actions).to_be_hidden()
