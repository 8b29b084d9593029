"""What a name shown to other people may hold: no control or bidirectional-override
characters, no reserved system names, and a confusable *skeleton* (after Unicode TR39) to
tell names apart as readers see them, not as code points.

The skeleton table is small and built in: the common look-alikes among ASCII (``I``/``i``/
``l``/``1``/``|``, ``O``/``0``, ``rn``/``m``, ``vv``/``w``) and the Cyrillic and Greek letters
that look like Latin ones. It is not the full TR39 ``confusables.txt``.
"""

from __future__ import annotations

import unicodedata

# Bidirectional embeddings, overrides and isolates, and the marks: they reorder or hide text.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
INVISIBLE = "\u00ad\u034f\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
"""Characters that take no room on screen: a text made of them (and spaces) shows nothing."""
BLANK = (
    INVISIBLE
    + "\x1c\x1d\x1e\x1f\x85 \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    + "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Every character ``str.isspace`` counts, and :data:`INVISIBLE`."""
RESERVED_NAMES = frozenset(
    {"admin", "administrator", "system", "root", "moderator", "fastchat", "server", "support",
     "staff", "official", "deleted user", "deleted-user", "deleted_user", "everyone", "here"}
)  # fmt: skip
"""Usernames nobody may register: they would pass for the server or its staff."""

# Look-alikes of Latin letters, by code point (the letters themselves would hide here).
_LOOKALIKE = str.maketrans(
    {
        "I": "l", "1": "l", "|": "l", "0": "o", "\u0430": "a", "\u0432": "b",
        "\u0435": "e", "\u043a": "k", "\u043c": "m", "\u043d": "h", "\u043e": "o", "\u0440": "p",
        "\u0441": "c", "\u0442": "t", "\u0443": "y", "\u0445": "x", "\u0456": "i", "\u0458": "j",
        "\u0455": "s", "\u0501": "d", "\u051b": "q", "\u051d": "w", "\u0261": "g", "\u0410": "A",
        "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O",
        "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0406": "l", "\u0408": "J",
        "\u0405": "S", "\u03b1": "a", "\u03b5": "e", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v",
        "\u03bf": "o", "\u03c1": "p", "\u03c5": "u", "\u03c7": "x", "\u0391": "A", "\u0392": "B",
        "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "l", "\u039a": "K", "\u039c": "M",
        "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y", "\u03a7": "X",
    }
)  # fmt: skip
_SEQUENCES = (("rn", "m"), ("vv", "w"))


def unsafe_character(text: str) -> str | None:
    """The first control, bidirectional-control or invisible character of ``text``, if any."""
    for char in text:
        if char in _BIDI or char in INVISIBLE or unicodedata.category(char) in ("Cc", "Cf"):
            return char
    return None


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only spaces and invisible characters."""
    return not text.strip(BLANK)


def skeleton(text: str) -> str:
    """The form two names are compared in: equal skeletons look alike to a reader."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c) and c not in INVISIBLE)
    # Compared regardless of case, so "I" and "l" (alike in capitals) stand for "i" too.
    folded = folded.translate(_LOOKALIKE).casefold().replace("i", "l")
    for sequence, lookalike in _SEQUENCES:
        folded = folded.replace(sequence, lookalike)
    return " ".join(folded.split())


def is_reserved(username: str) -> bool:
    """Whether ``username`` is, or looks like, a reserved system name."""
    key = skeleton(username)
    return any(key == skeleton(name) for name in RESERVED_NAMES)
