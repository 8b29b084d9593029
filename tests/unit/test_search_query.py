"""fastchat.chat.search: user text becomes words, and words a MATCH that FTS5 always runs."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat.chat.search import MAX_QUERY_WORDS, match_expression, query_words
from fastchat.config import StorageConfig
from fastchat.errors import InvalidQuery
from fastchat.storage import sqlite


@pytest.fixture(scope="module")
def store():
    with tempfile.TemporaryDirectory() as folder:
        s = sqlite.SqliteStore(StorageConfig(path=Path(folder) / "chat.db"))
        s.open()
        yield s
        s.close()


def test_words_are_lower_cased_and_split_on_anything_else() -> None:
    assert query_words('Zebra "AND" (crossing)* NEAR/2 foo_bar ünï') == [
        "zebra",
        "and",
        "crossing",
        "near",
        "2",
        "foo",
        "bar",
        "ünï",
    ]
    assert match_expression(["zebra", "and"]) == '"zebra" "and"'


@pytest.mark.parametrize("query", ["", "   ", "!!!", '"*"', "_"])
def test_queries_without_words_are_invalid(query: str) -> None:
    with pytest.raises(InvalidQuery):
        query_words(query)


def test_too_many_words_are_invalid() -> None:
    with pytest.raises(InvalidQuery) as info:
        query_words(" ".join(["w"] * (MAX_QUERY_WORDS + 1)), "search")
    assert info.value.code == "invalid_query" and info.value.request_type == "search"


@given(st.text(max_size=60))
def test_any_query_is_refused_cleanly_or_runs_in_fts5(store, query: str) -> None:
    try:
        words = query_words(query)
    except InvalidQuery:
        return
    hits = asyncio.run(
        store.search_messages(match_expression(words), ["general"], before_id=None, limit=5)
    )
    assert hits == []
