"""Page helpers shared by the browser tests: who is signed in, and the common gestures."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from playwright.sync_api import Locator, Page, expect


@dataclass
class Person:
    """A signed-in user with their own browser context and page."""

    page: Page
    username: str
    user_id: str
    errors: list[str] = field(default_factory=list)


SignUp = Callable[..., Person]


def unique_name(prefix: str) -> str:
    """A name that no other test uses: prefix plus 6 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def create_room(person: Person, name: str) -> None:
    """Create a public room through the sidebar form; the creator lands in it."""
    page = person.page
    page.click("#create-room summary")
    page.fill("#room-name", name)
    page.fill("#room-description", "for the tests")
    page.click("#create-room-form button[type=submit]")
    expect(page.locator("#current-room-name")).to_have_text(f"# {name}")


def open_room(person: Person, name: str) -> None:
    """Click a room in the sidebar and wait until it is the current one."""
    person.page.locator("#room-list .room", has_text=name).click()
    expect(person.page.locator("#current-room-name")).to_have_text(f"# {name}")


def send(person: Person, text: str) -> None:
    """Type a message and press Enter."""
    person.page.fill("#message-input", text)
    person.page.press("#message-input", "Enter")


def message(person: Person, text: str) -> Locator:
    """The message whose content is exactly `text`."""
    exact = re.compile(f"^{re.escape(text)}$")
    return person.page.locator("#messages .message").filter(
        has=person.page.locator(".content", has_text=exact)
    )
