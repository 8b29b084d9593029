"""Fixtures for the browser tests: one server and one headless Chromium per module, and a
sign-up helper."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chatpage import Pair, Person, SignUp, create_room, open_room, unique_name
from playwright import sync_api

from tests.support.accounts import PASSWORD
from tests.support.server import ServerProcess

CHROMIUM = os.environ.get("FASTCHAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Records every notification the page raises: their titles in window.notified, the
# notifications themselves in window.notifications (a test can click one).
RECORD_NOTIFICATIONS = """
window.notified = [];
window.notifications = [];
const RealNotification = window.Notification;
window.Notification = new Proxy(RealNotification, {
  construct(target, args) {
    const note = Reflect.construct(target, args);
    window.notified.push(args[0]);
    window.notifications.push(note);
    return note;
  },
  get(target, name) { return target[name]; },
});
"""
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by a module's tests."""
    directory = tmp_path_factory.mktemp("module-server")
    server = ServerProcess.configured(directory).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def chromium_args() -> list[str]:
    """Chromium's command line; a module overrides this fixture to add flags."""
    return CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser(chromium_args: list[str]) -> Iterator[sync_api.Browser]:
    """A headless Chromium (the system one: no browser download)."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):  # in CI the browser tests must run, never skip
            pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/test installs it")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
        yield launched
        launched.close()


@pytest.fixture
def screenshots() -> Path:
    """The folder for screenshots (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
def sign_up(browser: sync_api.Browser, module_server) -> Iterator[SignUp]:
    """Factory: ``sign_up(prefix, viewport=None, route_ws=None, existing=None, touch=False,
    notifications=False)`` registers a new user (or signs in as the ``existing`` one) in a
    fresh browser context through the form and waits for the live connection; ``touch``
    emulates a phone's touch screen, ``notifications`` grants the permission and records the
    notifications raised (``window.notified``: titles, ``window.notifications``).

    ``route_ws``, when given, sees every WebSocket the page opens (a man in the middle).
    Contexts are closed at the end; uncaught page errors fail the test.
    """
    people: list[Person] = []

    def make(
        prefix: str,
        viewport: dict[str, int] | None = None,
        route_ws: Callable[[sync_api.WebSocketRoute], None] | None = None,
        existing: str | None = None,
        touch: bool = False,
        notifications: bool = False,
    ) -> Person:
        context = browser.new_context(
            viewport=viewport or {"width": 1200, "height": 800}, has_touch=touch, is_mobile=touch
        )
        if notifications:
            context.grant_permissions(["notifications"], origin=module_server.base_url)
            context.add_init_script(RECORD_NOTIFICATIONS)
        page = context.new_page()
        if route_ws is not None:
            page.route_web_socket(lambda url: url.endswith("/ws"), route_ws)
        person = Person(page=page, username=existing or unique_name(prefix), user_id="")
        page.on("pageerror", lambda exc: person.errors.append(str(exc)))
        people.append(person)
        page.goto(module_server.base_url + "/")
        if existing:
            page.fill("#login-username", existing)
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
        else:
            page.click("#show-register")
            page.fill("#register-username", person.username)
            page.fill("#register-email", f"{person.username}@example.com")
            page.fill("#register-password", PASSWORD)
            page.click("#register-form button[type=submit]")
        sync_api.expect(page.locator("#connection-status")).to_have_attribute(
            "data-state", "connected"
        )
        session = json.loads(page.evaluate("localStorage.getItem('fastchat.session')"))
        person.user_id = session["user"]["id"]
        return person

    yield make
    errors = {p.username: p.errors for p in people if p.errors}
    for person in people:
        person.page.context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def pair(sign_up: SignUp) -> Pair:
    """Alice and Bob, signed in, both in a fresh public room."""
    alice = sign_up("alice")
    bob = sign_up("bob")
    room = unique_name("room")
    create_room(alice, room)
    open_room(bob, room)
    return alice, bob, room
