"""Message formatting in Chromium: the safe Markdown subset, built from elements and text
nodes only, with the raw text kept as what is stored, sent and edited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chatpage import SignUp, create_room, open_room, send, unique_name
from hypothesis import given, settings
from hypothesis import strategies as st
from playwright import sync_api
from playwright.sync_api import expect

from tests.support.server import ServerProcess

ALLOWED_TAGS = {"P", "STRONG", "EM", "DEL", "CODE", "PRE", "BLOCKQUOTE", "A", "SPAN"}

# Renders `text` into a detached element and describes what came out.
RENDER = """
async ({ text }) => {
  const md = await import('/static/js/markdown.js');
  const box = document.createElement('div');
  box.append(...md.render(text, (name) => name === 'me'));
  const elements = [...box.querySelectorAll('*')];
  return {
    tags: [...new Set(elements.map((e) => e.tagName))],
    attributes: [...new Set(elements.flatMap((e) => e.getAttributeNames()))],
    links: [...box.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.textContent,
      a.target, a.rel]),
    text: box.textContent,
  };
}
"""


@pytest.fixture(scope="module")
def blank_page(browser: sync_api.Browser, module_server: ServerProcess) -> Iterator[sync_api.Page]:
    """A page of the server's origin, to import the client's modules in."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(module_server.base_url + "/")
    yield page
    context.close()


def test_markdown_renders_as_elements_and_the_raw_text_stays(sign_up: SignUp, screenshots) -> None:
    alice = sign_up("alice")
    bob = sign_up("bob")
    room = unique_name("md")
    create_room(alice, room)
    open_room(bob, room)
    raw = (
        "**bold** *italic* ~~gone~~ `a <b>tag</b>` see https://example.com/x\n"
        "> quoted _line_\n"
        "```\n<script>alert(1)</script>\n**not bold**\n```\n"
        "hey @" + bob.username
    )
    send(alice, raw)
    shown = bob.page.locator("#messages .message").last.locator(".content")
    expect(shown.locator("strong")).to_have_text("bold")
    expect(shown.locator(":scope > p em")).to_have_text("italic")
    expect(shown.locator("del")).to_have_text("gone")
    expect(shown.locator("p > code")).to_have_text("a <b>tag</b>")
    expect(shown.locator("blockquote.md-quote em")).to_have_text("line")
    expect(shown.locator("pre code")).to_have_text("<script>alert(1)</script>\n**not bold**")
    expect(shown.locator("a")).to_have_attribute("rel", "noopener noreferrer")
    expect(shown.locator(".mention.me")).to_have_text("@" + bob.username)
    assert shown.locator("script, b").count() == 0
    bob.page.screenshot(path=str(screenshots / "formatting.png"))

    # Editing starts from the raw text, as stored.
    mine = alice.page.locator("#messages .message").last
    mine.hover()
    mine.locator(".action.edit").click()
    expect(alice.page.locator(".edit-input")).to_have_value(raw)
    alice.page.press(".edit-input", "Escape")


def test_mentions_of_others_are_marked_but_not_highlighted(blank_page: sync_api.Page) -> None:
    out = blank_page.evaluate(RENDER, {"text": "@someone and @me, mail a@b.c"})
    assert out["text"] == "@someone and @me, mail a@b.c"
    highlighted = blank_page.evaluate(
        """async () => {
          const md = await import('/static/js/markdown.js');
          const [para] = md.render('@someone and @me', (n) => n === 'me');
          return [...para.querySelectorAll('.mention')].map((m) => m.className);
        }"""
    )
    assert highlighted == ["mention", "mention me"]


# Texts made of markup pieces: the characters the parser reacts to, and URL and fence starts.
MARKUP = st.lists(
    st.sampled_from([*"ab *_~`>@:/.\n<>\"'&", "http://", "https://x.y", "```"]), max_size=40
).map("".join)


@given(MARKUP)
@settings(max_examples=150, deadline=None)
def test_any_text_renders_to_the_allowed_elements_only(
    blank_page: sync_api.Page, text: str
) -> None:
    out = blank_page.evaluate(RENDER, {"text": text})
    assert set(out["tags"]) <= ALLOWED_TAGS
    assert set(out["attributes"]) <= {"class", "href", "target", "rel"}
    for href, label, target, rel in out["links"]:
        assert href.startswith(("http://", "https://")) and href == label
        assert (target, rel) == ("_blank", "noopener noreferrer")


PLAIN = st.characters(blacklist_characters="*_~`>@\n:", blacklist_categories=("Cs",))


@given(st.text(alphabet=PLAIN, max_size=80))
@settings(max_examples=80, deadline=None)
def test_text_without_markup_is_shown_exactly(blank_page: sync_api.Page, text: str) -> None:
    out = blank_page.evaluate(RENDER, {"text": text})
    assert out["text"] == text
