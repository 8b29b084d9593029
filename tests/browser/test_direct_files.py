"""Files in direct messages, in Chromium against the real server: the DM composer attaches
like the room one, and the peer sees the image inline and the file as a card."""

from __future__ import annotations

from pathlib import Path

from chatpage import Pair, message, send, solid_png
from playwright.sync_api import expect

THUMB_LOADED = (
    "() => { const img = document.querySelector('#messages img.thumb');"
    " return img && img.src.startsWith('blob:') && img.complete && img.naturalWidth === 120; }"
)


def test_a_file_attached_in_a_dm_is_seen_by_the_peer(
    pair: Pair, tmp_path: Path, screenshots: Path
) -> None:
    alice, bob, _ = pair
    alice.page.locator(f'#member-list .member[data-user-id="{bob.user_id}"] .member-name').click()
    send(alice, "a picture for you")
    expect(alice.page.locator("#attach-button")).to_be_enabled()
    picture = tmp_path / "sunset.png"
    picture.write_bytes(solid_png(120, 80))
    alice.page.set_input_files("#file-input", str(picture))
    notes = tmp_path / "notes.txt"
    notes.write_text("n" * 1536)
    alice.page.set_input_files("#file-input", str(notes))
    expect(alice.page.locator("#messages .file-card a.download")).to_have_count(1)  # acked

    bob.page.locator(f'#dm-list .dm[data-user-id="{alice.user_id}"]').click()
    expect(message(bob, "a picture for you")).to_have_count(1)
    image = bob.page.locator("#messages .message img.thumb")
    expect(image).to_have_attribute("alt", "sunset.png")
    bob.page.wait_for_function(THUMB_LOADED)
    card = bob.page.locator("#messages .file-card", has_text="notes.txt")
    expect(card.locator(".file-size")).to_have_text("1.5 KB")
    expect(card.locator("a.download")).to_have_count(1)
    bob.page.screenshot(path=str(screenshots / "dm-attachments.png"))

    # a fresh page finds both in the conversation's history
    bob.page.reload()
    bob.page.locator(f'#dm-list .dm[data-user-id="{alice.user_id}"]').click()
    bob.page.wait_for_function(THUMB_LOADED)
    expect(bob.page.locator("#messages .file-card", has_text="notes.txt")).to_have_count(1)
