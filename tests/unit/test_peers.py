"""DmPeers against a model: whoever is online here with a conversation with a user is told."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fastchat.chat.peers import DmPeers

USERS = st.sampled_from("abcde")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("learn"), USERS, st.frozensets(USERS)),
        st.tuples(st.just("link"), USERS, USERS),
        st.tuples(st.just("forget"), USERS, st.just(None)),
    ),
    max_size=40,
)


@given(STEPS)
def test_watchers_are_the_online_users_with_a_conversation(steps):
    peers = DmPeers()
    online: set[str] = set()
    known: dict[str, set[str]] = {}
    for step, user, other in steps:
        if step == "learn":
            online.add(user)
            known.setdefault(user, set()).update(other - {user})
            peers.learn(user, other - {user})
        elif step == "link" and user != other:
            new = peers.link(user, other)
            assert new == (user in online and other not in known[user])
            for a, b in ((user, other), (other, user)):
                if a in online:
                    known[a].add(b)
        elif step == "forget":
            online.discard(user)
            known.pop(user, None)
            peers.forget(user)
        for target in "abcde":
            expected = {u for u in online if target in known[u]}
            assert set(peers.watchers(target)) == expected
