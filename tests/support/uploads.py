"""Uploading and downloading files over HTTP, and small bodies of known types."""

from __future__ import annotations

from urllib.parse import quote

import httpx

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(20)
TEXT = b"0123456789 just some text\n"


def upload(
    http: httpx.Client,
    token: str | None,
    body: bytes,
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    """POST ``body`` to the upload endpoint as ``name``."""
    headers = {"Content-Type": content_type, "X-Filename": quote(name)}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return http.post("/api/chat/upload", content=body, headers=headers)


def download(
    http: httpx.Client, file_id: str, token: str | None, range_: str | None = None
) -> httpx.Response:
    """GET an uploaded file, maybe a byte range of it."""
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if range_ is not None:
        headers["Range"] = range_
    return http.get(f"/api/chat/files/{file_id}", headers=headers)
