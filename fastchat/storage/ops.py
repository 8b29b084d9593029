"""The write operations, backend-neutral: each is a name and its parameters.

The chat builds them and hands them to a :class:`~fastchat.storage.base.Writer`; a backend
maps each name to its statement. Timestamps are ISO-8601 UTC strings made by the caller.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastchat.names import skeleton
from fastchat.storage.base import Op


def dm_pair(user_a: str, user_b: str) -> str:
    """The conversation key of two users: their ids sorted and joined by ``':'``."""
    return f"{user_a}:{user_b}" if user_a <= user_b else f"{user_b}:{user_a}"


def insert_user(
    *,
    id: str,
    username: str,
    email: str | None,
    password_hash: str,
    created_at: str,
    avatar_url: str | None = None,
    role: str = "user",
) -> Op:
    """Create a user (``last_seen`` starts at ``created_at``), with the confusable
    skeletons of its username and email."""
    return (
        "insert_user",
        (
            id,
            username,
            email,
            password_hash,
            avatar_url,
            role,
            created_at,
            created_at,
            skeleton(username),
            None if email is None else skeleton(email),
        ),
    )


def set_user_keys(user_id: str, username: str, email: str | None) -> Op:
    """Store the confusable skeletons of an account made before they were kept."""
    return (
        "set_user_keys",
        (skeleton(username), None if email is None else skeleton(email), user_id),
    )


def set_user_role(user_id: str, role: str) -> Op:
    """Change a user's site role (user, moderator or admin)."""
    return ("set_user_role", (role, user_id))


def set_user_ban(user_id: str, banned_until: float | None, reason: str | None) -> Op:
    """Ban until a Unix time (:data:`~fastchat.storage.base.FOREVER`: permanent); None lifts it."""
    return ("set_user_ban", (banned_until, reason, user_id))


def touch_last_seen(user_id: str, at: str) -> Op:
    """Record when the user was last seen."""
    return ("touch_last_seen", (at, user_id))


def insert_room(
    *,
    id: str,
    name: str,
    description: str | None,
    is_private: bool,
    created_by: str | None,
    created_at: str,
) -> Op:
    """Create a room."""
    return ("insert_room", (id, name, description, int(is_private), created_by, created_at))


def add_member(room_id: str, user_id: str, role: str, joined_at: str) -> Op:
    """Add a member (``'member'`` or ``'owner'``); does nothing if already a member."""
    return ("add_member", (room_id, user_id, role, joined_at))


def remove_member(room_id: str, user_id: str) -> Op:
    """Remove a member from a room."""
    return ("remove_member", (room_id, user_id))


def insert_message(
    *,
    id: str,
    room_id: str,
    seq: int,
    user_id: str,
    content: str,
    created_at: str,
    message_type: str = "text",
    reply_to: str | None = None,
    client_id: str | None = None,
    attachment_id: str | None = None,
) -> Op:
    """Store a room message."""
    return (
        "insert_message",
        (
            id,
            room_id,
            seq,
            user_id,
            content,
            message_type,
            reply_to,
            client_id,
            attachment_id,
            created_at,
        ),
    )


def edit_message(id: str, content: str, edited_at: str) -> Op:
    """Replace a message's content."""
    return ("edit_message", (content, edited_at, id))


def delete_message(id: str, deleted_at: str) -> Op:
    """Soft-delete a message: its content is blanked and ``deleted_at`` set."""
    return ("delete_message", (deleted_at, id))


def insert_dm(
    *,
    id: str,
    seq: int,
    sender_id: str,
    recipient_id: str,
    content: str,
    created_at: str,
    client_id: str | None = None,
    message_type: str = "text",
    attachment_id: str | None = None,
) -> Op:
    """Store a direct message (``seq`` is global across all conversations); one sharing a
    file records it in the same row, so the file is shared exactly when the message is
    stored."""
    pair = dm_pair(sender_id, recipient_id)
    if attachment_id is None:
        return (
            "insert_dm",
            (id, seq, pair, sender_id, recipient_id, content, client_id, created_at),
        )
    return (
        "insert_dm_file",
        (
            id,
            seq,
            pair,
            sender_id,
            recipient_id,
            content,
            client_id,
            created_at,
            message_type,
            attachment_id,
        ),
    )


def set_mute(room_id: str, user_id: str, until: float) -> Op:
    """Mute a user in a room until a Unix time (replacing any earlier mute)."""
    return ("set_mute", (room_id, user_id, until))


def clear_mute(room_id: str, user_id: str) -> Op:
    """Lift a mute."""
    return ("clear_mute", (room_id, user_id))


def insert_audit(
    *,
    at: str,
    actor_id: str | None,
    action: str,
    target_user_id: str | None = None,
    room_id: str | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Op:
    """Append to the audit log; ``detail`` is stored as JSON."""
    detail_json = orjson.dumps(detail).decode() if detail is not None else None
    return (
        "insert_audit",
        (at, actor_id, action, target_user_id, room_id, reason, detail_json),
    )


def insert_file(
    *,
    id: str,
    uploader_id: str,
    name: str,
    size: int,
    content_type: str,
    created_at: str,
    room_id: str | None = None,
    message_id: str | None = None,
) -> Op:
    """Record an uploaded file."""
    return (
        "insert_file",
        (id, uploader_id, name, size, content_type, created_at, room_id, message_id),
    )


def attach_file(file_id: str, room_id: str, message_id: str) -> Op:
    """Link an uploaded file to the message that shares it."""
    return ("attach_file", (room_id, message_id, file_id))


def set_password(user_id: str, password_hash: str) -> Op:
    """Replace a user's password hash."""
    return ("set_password", (password_hash, user_id))


def insert_login_session(
    *, id: str, user_id: str, token_hash: str, created_at: str, expires_at: float
) -> Op:
    """Open a login session whose current refresh token has ``token_hash``."""
    return ("insert_login_session", (id, user_id, token_hash, created_at, expires_at))


def add_refresh_token(token_hash: str, session_id: str) -> Op:
    """Remember that a refresh token was issued to a session (for reuse detection)."""
    return ("add_refresh_token", (token_hash, session_id))


def rotate_refresh_token(session_id: str, token_hash: str, expires_at: float) -> Op:
    """Make ``token_hash`` the session's current refresh token (unless it is revoked)."""
    return ("rotate_refresh_token", (token_hash, expires_at, session_id))


def revoke_login_session(session_id: str, at: str) -> Op:
    """End one login session."""
    return ("revoke_login_session", (at, session_id))


def revoke_user_sessions(user_id: str, at: str, keep: str | None = None) -> Op:
    """End every login session of a user but ``keep`` (if given)."""
    return ("revoke_user_sessions", (at, user_id, keep))


def prune_user_changes(before: float) -> Op:
    """Forget account change log entries older than a Unix time."""
    return ("prune_user_changes", (before,))


def remove_user_memberships(user_id: str) -> Op:
    """Take a user out of every room."""
    return ("remove_user_memberships", (user_id,))


def delete_user_messages(user_id: str, deleted_at: str) -> Op:
    """Soft-delete every room message of a user."""
    return ("delete_user_messages", (deleted_at, user_id))


def delete_user_dms(user_id: str) -> Op:
    """Remove every direct message a user sent."""
    return ("delete_user_dms", (user_id,))


def delete_user(user_id: str) -> Op:
    """Remove a user's account row."""
    return ("delete_user", (user_id,))
def set_read_marker(user_id: str, conversation: str, seq: int) -> Op:
    """Move a user's read marker in a room (its id) or a DM (:func:`dm_pair`) forward to
    ``seq``; a marker is never moved back."""
    return ("set_read_marker", (user_id, conversation, seq))


def add_reaction(message_id: str, emoji: str, user_id: str, created_at: str) -> Op:
    """Add a user's reaction to a message; does nothing if it is there already."""
    return ("add_reaction", (message_id, emoji, user_id, created_at))


def remove_reaction(message_id: str, emoji: str, user_id: str) -> Op:
    """Take a user's reaction off a message."""
    return ("remove_reaction", (message_id, emoji, user_id))


def count_reply(parent_id: str, delta: int) -> Op:
    """Count one more reply to a message (``delta`` 1, after the reply's own insert) or one
    less (-1, a reply deleted); never below 0."""
    return ("count_reply", (delta, parent_id))


def set_mentions(message_id: str, user_ids: list[str], mentions_room: bool) -> Op:
    """Record whom a message mentions (after its insert; only for messages that do)."""
    return ("set_mentions", (orjson.dumps(user_ids).decode(), int(mentions_room), message_id))


def set_dm_reply(id: str, reply_to: str) -> Op:
    """Record which direct message one replies to (after its insert)."""
    return ("set_dm_reply", (reply_to, id))


def edit_dm(id: str, content: str, edited_at: str) -> Op:
    """Replace a direct message's content."""
    return ("edit_dm", (content, edited_at, id))


def delete_dm(id: str, deleted_at: str) -> Op:
    """Soft-delete a direct message: its content is blanked and ``deleted_at`` set."""
    return ("delete_dm", (deleted_at, id))
