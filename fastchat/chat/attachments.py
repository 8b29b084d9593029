"""Files shared by messages, room messages and direct messages alike: whether a file may be
attached, the files being attached right now, and who may download one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import Conflict, NotFound, ValidationError
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.history import History
    from fastchat.chat.rooms import RoomDirectory
    from fastchat.chat.users import User
    from fastchat.chat.writes import Writes
    from fastchat.storage.base import FileRow, OnDone, Store


class Attachments:
    """Attaching uploaded files to messages, and the download rule that follows."""

    def __init__(self, directory: RoomDirectory, store: Store, history: History):
        self._directory = directory
        self._store = store
        self._history = history
        # file id -> (room id, message id) of the room message sharing it, until stored
        self._in_rooms: dict[str, tuple[str, str]] = {}
        # file id -> the two users of the direct message sharing it, until stored
        self._in_direct: dict[str, tuple[str, str]] = {}

    async def attachment(
        self, user: User, file_id: str, message_type: str, request_type: str
    ) -> dict[str, Any]:
        """The attachment of a message ``user`` sends with ``file_id``: their own upload,
        not attached (nor being attached) to any message, an image if sent as one."""
        # Before the read and after it: one being attached when the read began may have been
        # stored (and forgotten here) by the time it returns, without the read seeing it.
        attaching = self._attaching(file_id)
        row = await self._store.file(file_id)
        if row is None or row.uploader_id != user.id:
            raise NotFound("File not found", request_type=request_type)
        if (
            attaching
            or row.message_id is not None
            or row.dm_id is not None
            or self._attaching(file_id)
        ):
            raise Conflict("This file is already attached to a message", request_type=request_type)
        if message_type == "image" and not row.content_type.startswith("image/"):
            raise ValidationError(
                "This file is not an image: send it as messageType file",
                request_type=request_type,
                field="messageType",
            )
        return p.attachment_json(row.id, row.name, row.size, row.content_type)

    def _attaching(self, file_id: str) -> bool:
        """Whether a message sharing the file is on its way to storage."""
        return file_id in self._in_rooms or file_id in self._in_direct

    def attach_to_room(self, writes: Writes, file_id: str, room_id: str, message_id: str) -> None:
        """Share a file in a room message (queued after the message's insert)."""
        self._in_rooms[file_id] = (room_id, message_id)
        writes.submit(
            ops.attach_file(file_id, room_id, message_id),
            lambda _error: self._in_rooms.pop(file_id, None),
        )

    def attaching_direct(
        self, file_id: str, sender_id: str, recipient_id: str, stored: OnDone
    ) -> OnDone:
        """Share a file in a direct message, whose insert records it: remember it until
        then; returns the insert's ``on_done`` (forgets it, then calls ``stored``)."""
        self._in_direct[file_id] = (sender_id, recipient_id)

        def done(error: BaseException | None) -> None:
            self._in_direct.pop(file_id, None)
            stored(error)

        return done

    async def check_access(self, user: User, file: FileRow) -> None:
        """Raise NotFound unless ``user`` may download ``file``.

        Until it is shared only its uploader may; then whoever may see the message sharing
        it (the room's members, the direct message's two users), until that message is
        deleted (which withdraws the file). Anyone else is told it does not exist.
        """
        if file.dm_id is not None:
            row = await self._store.dm_by_id(file.dm_id)
            if row is None or row.deleted_at or user.id not in (row.sender_id, row.recipient_id):
                raise NotFound("File not found")
            return
        users = self._in_direct.get(file.id)
        if users is not None:
            if user.id not in users:
                raise NotFound("File not found")
            return
        if file.room_id is not None and file.message_id is not None:
            share: tuple[str, str] | None = (file.room_id, file.message_id)
        else:
            share = self._in_rooms.get(file.id)
        if share is None:
            if file.uploader_id != user.id:
                raise NotFound("File not found")
            return
        room = self._directory.by_id.get(share[0])
        if room is None or not room.visible_to(user):
            raise NotFound("File not found")  # as if it did not exist: private rooms stay secret
        found = await self._history.find(share[1])
        if found is None or found[1].get("deleted"):
            raise NotFound("File not found")
