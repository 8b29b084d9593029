"""Display safety: reserved names, unsafe characters, confusable skeletons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat import protocol as p
from fastchat.errors import ValidationError
from fastchat.names import INVISIBLE, is_blank, is_reserved, skeleton, unsafe_character

CYRILLIC_E = "\u0435"
RIGHT_TO_LEFT_OVERRIDE = "\u202e"


def test_look_alikes_share_a_skeleton_and_different_names_do_not():
    assert skeleton("aIice") == skeleton("alice") == skeleton("ALICE")
    assert skeleton(f"G{CYRILLIC_E}neral") == skeleton("General")
    assert skeleton("rnoon") == skeleton("moon")
    assert skeleton("al\u200bice") == skeleton("alice")
    assert skeleton("alice") != skeleton("alicia")
    assert skeleton("bob") != skeleton("rob")


@pytest.mark.parametrize("name", ["admin", "System", "ADM1N", "r00t", "deleted user"])
def test_system_names_are_reserved(name):
    assert is_reserved(name)


@pytest.mark.parametrize("name", ["alice", "admiral", "systems_guy", "roots"])
def test_ordinary_names_are_not_reserved(name):
    assert not is_reserved(name)


def test_control_bidi_and_invisible_characters_are_unsafe():
    for char in ("\x00", "\x1b", RIGHT_TO_LEFT_OVERRIDE, "\u2066", "\u200f", "\u200b"):
        assert unsafe_character(f"a{char}b") == char
    assert unsafe_character("Tech Talk ☕ café") is None


@given(st.text(alphabet=st.sampled_from(INVISIBLE + " \t\u3000"), min_size=1, max_size=50))
def test_text_of_only_spaces_and_invisible_characters_is_blank(text):
    assert is_blank(text)
    with pytest.raises(ValidationError, match="cannot be empty"):
        p.parse_fields("send_message", {"roomId": "general", "content": text})


@given(st.text(min_size=1, max_size=20), st.integers(min_value=0, max_value=20))
def test_invisible_characters_do_not_change_a_skeleton(text, at):
    assert skeleton(text[:at] + "\u200b" + text[at:]) == skeleton(text)


@given(st.text(min_size=1, max_size=40))
def test_room_names_with_unsafe_characters_are_refused(text):
    fields = {"name": f"room {text}"}
    if unsafe_character(fields["name"].strip()) is None:
        assert p.parse_fields("create_room", fields).name == fields["name"].strip()
    else:
        with pytest.raises(ValidationError, match="text-direction"):
            p.parse_fields("create_room", fields)


def test_attachment_names_lose_their_direction_overrides():
    from fastchat.web.uploads import sanitize_name

    assert sanitize_name(f"invoice{RIGHT_TO_LEFT_OVERRIDE}fdp.exe") == "invoice_fdp.exe"
