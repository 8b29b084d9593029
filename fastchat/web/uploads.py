"""File sharing: streamed uploads, content sniffing, access-checked downloads.

Uploads are the raw request body (``Content-Type`` = the file's type, ``X-Filename`` = the
URL-encoded original name). The body goes to a temporary file as it arrives and is never
held whole in memory; the stored name is a random id, the original name is metadata only.
The served type is decided from the content: whitelisted images by their magic bytes,
everything else ``application/octet-stream`` sent as an attachment.

Space is bounded three ways, each answered ``507``: a total quota, a quota per account,
and a reserve of free disk kept for the database. A file system that refuses the bytes
(full: 507; read-only or gone: 503) is logged and answered as such.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from fastchat.auth import bearer_token
from fastchat.clock import utc_now_iso
from fastchat.errors import (
    ChatError,
    InsufficientStorage,
    NotFound,
    RateLimited,
    StorageUnavailable,
    ValidationError,
)
from fastchat.names import unsafe_character
from fastchat.protocol import attachment_json
from fastchat.ratelimit import KeyedLimiter
from fastchat.storage import ops
from fastchat.web.http import BodySink, FileBody, Request, Response, json_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from fastchat.auth import TokenService
    from fastchat.chat import Chat, User
    from fastchat.config import UploadsConfig
    from fastchat.storage.base import Store, Writer

log = logging.getLogger("fastchat.uploads")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_SNIFF_BYTES = 16
_NAME_MAX = 200
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\<>:\"|?*]")
_FILE_CSP = "default-src 'none'; sandbox"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_MAX_POSITION_DIGITS = 19
_BEYOND_ANY_FILE = 10**_MAX_POSITION_DIGITS


def sniff(head: bytes) -> str:
    """The served content type: a whitelisted image by its magic bytes, else octet-stream."""
    for magic, ctype in _IMAGE_MAGIC:
        if head.startswith(magic):
            return ctype
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def sanitize_name(raw: str | None) -> str:
    """A display name without path parts, control characters or markup-relevant characters."""
    name = unquote(raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name)
    name = "".join("_" if unsafe_character(c) else c for c in name).strip(" .")
    return name[:_NAME_MAX] or "file"


def _storage_error(exc: OSError, path: Path) -> ChatError:
    """An upload the file system refused: logged once here, answered 507 or 503."""
    log.error("upload to %s failed: %s", path.parent, exc)
    if exc.errno in _DISK_FULL:
        return InsufficientStorage("The server has no room for this file")
    return StorageUnavailable("Uploads cannot be stored right now")


class _TempFileSink:
    """Writes the body to a temporary file, remembering its size and first bytes; past
    ``allowance`` bytes (or when the file system refuses them) it stops and fails."""

    def __init__(
        self, directory: Path, user_id: str | None, error: ChatError | None, allowance: int = 0
    ):
        self.user_id = user_id
        self.error = error
        self.size = 0
        self.head = b""
        self.path = directory / f".upload-{uuid.uuid4().hex}"
        self._allowance = allowance
        self._fd: int | None = None
        self._created = False
        if error is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                self.error = _storage_error(exc, self.path)
            else:
                self._created = True

    def write(self, chunk: bytes) -> None:
        if self._fd is None:
            return
        if len(self.head) < _SNIFF_BYTES:
            self.head += chunk[: _SNIFF_BYTES - len(self.head)]
        self.size += len(chunk)
        if self.size > self._allowance:
            self._fail(InsufficientStorage("Upload quota exceeded"))
            return
        try:
            os.write(self._fd, chunk)
        except OSError as exc:
            self._fail(_storage_error(exc, self.path))

    def _fail(self, error: ChatError) -> None:
        self.error = error
        self.abort()

    def finish(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def abort(self) -> None:
        self.finish()
        if self._created:
            self._created = False
            self.path.unlink(missing_ok=True)


class Uploads:
    """The upload and download routes."""

    def __init__(
        self,
        directory: Path,
        config: UploadsConfig,
        tokens: TokenService,
        api_user: Callable[[Request], Awaitable[User]],
        store: Store,
        writer: Writer,
        chat: Chat,
    ):
        """``api_user`` is the account behind a request (it raises for anonymous ones)."""
        self._tokens = tokens
        self._api_user = api_user
        self._store = store
        self._writer = writer
        self._chat = chat
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        for leftover in self._dir.glob(".upload-*"):
            leftover.unlink(missing_ok=True)  # bodies of uploads cut off by a crash
        self._config = config
        self._limiter = KeyedLimiter(config.per_user_per_hour, 3600.0)
        self._used = store.upload_usage()  # uploader id -> bytes stored
        self._used_total = sum(self._used.values())

    def _allowance(self, user_id: str) -> int:
        """How many bytes ``user_id`` may upload now: quotas and the free-disk reserve.

        Raises InsufficientStorage when it is nothing at all.
        """
        stats = os.statvfs(self._dir)
        free = stats.f_bavail * stats.f_frsize - self._config.min_free_bytes
        allowance = min(
            self._config.total_max_bytes - self._used_total,
            self._config.per_user_max_bytes - self._used.get(user_id, 0),
            free,
        )
        if allowance <= 0:
            reason = "the disk is nearly full" if free <= 0 else "upload quota exceeded"
            raise InsufficientStorage(f"No room for uploads: {reason}")
        return allowance

    def sink(self, request: Request) -> BodySink:
        """Called when the headers are complete: check the token before storing a byte.

        The account behind it (it may be gone or banned: a storage read) is checked when
        the body is complete, before the file is kept.
        """
        try:
            user_id = self._tokens.verify(bearer_token(request.header("authorization"))).user_id
            retry = self._limiter.hit(user_id, time.monotonic())
            if retry is not None:
                raise RateLimited("Upload limit reached, try again later", retry_after=retry)
            allowance = self._allowance(user_id)
        except ChatError as err:
            return _TempFileSink(self._dir, None, err)
        except OSError as exc:  # the folder cannot even be looked at
            return _TempFileSink(self._dir, None, _storage_error(exc, self._dir / "."))
        return _TempFileSink(self._dir, user_id, None, allowance)

    async def upload(self, request: Request, sink: BodySink | None) -> Response:
        if not isinstance(sink, _TempFileSink):  # no sink: the body was empty
            await self._api_user(request)  # an anonymous request is refused as such first
            raise ValidationError("The file is empty", field="body")
        sink.finish()
        if sink.error is not None:
            sink.abort()
            raise sink.error
        try:
            user = await self._api_user(request)
        except ChatError:
            sink.abort()
            raise
        if sink.size == 0:
            sink.abort()
            raise ValidationError("The file is empty", field="body")
        file_id = uuid.uuid4().hex
        content_type = sniff(sink.head)
        name = sanitize_name(request.header("x-filename"))
        try:
            os.replace(sink.path, self._dir / file_id)
        except OSError as exc:
            sink.abort()
            raise _storage_error(exc, sink.path) from None
        # Counted now, so uploads finishing meanwhile see it; given back if not stored.
        self._used[user.id] = self._used.get(user.id, 0) + sink.size
        self._used_total += sink.size
        try:
            await self._writer.execute(
                ops.insert_file(
                    id=file_id,
                    uploader_id=user.id,
                    name=name,
                    size=sink.size,
                    content_type=content_type,
                    created_at=utc_now_iso(),
                )
            )
        except Exception:
            self._used[user.id] -= sink.size
            self._used_total -= sink.size
            (self._dir / file_id).unlink(missing_ok=True)
            raise
        return json_response(
            201,
            {"file": attachment_json(file_id, name, sink.size, content_type)},
        )

    async def download(self, request: Request, file_id: str) -> Response:
        user = await self._api_user(request)
        row = await self._store.file(file_id) if re.fullmatch(r"[0-9a-f]{32}", file_id) else None
        if row is None:
            raise NotFound("File not found")
        await self._chat.check_file_access(user, row)
        headers = [
            ("Content-Type", row.content_type),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", _FILE_CSP),
            ("Cache-Control", "private, max-age=3600"),
            ("Accept-Ranges", "bytes"),
        ]
        disposition = "inline" if row.content_type.startswith("image/") else "attachment"
        quoted = row.name.replace('"', "_")
        headers.append(("Content-Disposition", f'{disposition}; filename="{_ascii(quoted)}"'))
        file = (self._dir / row.id).open("rb")  # streamed by the HTTP layer, which closes it
        size = os.fstat(file.fileno()).st_size
        range_header = request.header("range")
        if not range_header:
            return Response(200, b"", headers, content_length=size, file=FileBody(file, 0, size))
        span = _byte_range(range_header, size)
        if span is None:
            file.close()
            return Response(416, b"", [("Content-Range", f"bytes */{size}")])
        start, end = span
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        length = end - start + 1
        return Response(
            206, b"", headers, content_length=length, file=FileBody(file, start, length)
        )


def _ascii(name: str) -> str:
    return name.encode("ascii", "replace").decode("ascii")


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte of a single ``bytes=start-end`` range (RFC 9110 section 14),
    or None if it is malformed or cannot be satisfied (416)."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - _position(last)), size - 1
    else:
        start = _position(first)
        end = min(_position(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def _position(digits: str) -> int:
    """A byte position; one of more digits than any file size has counts as beyond every file
    (and never reaches Python's limit on the digits of an int)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_POSITION_DIGITS else _BEYOND_ANY_FILE
