"""The browser client's files: read once at start, served with ETags and security headers."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from pathlib import Path

from fastchat.web.http import Request, Response

log = logging.getLogger("fastchat.api")

CLIENT_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' blob: data:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
_NO_CLIENT_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>fastchat: no browser client</title>"
    b"<h1>404: no browser client here</h1><p>This fastchat server has no browser client: the"
    b" folder set as <code>[server] static_dir</code> is missing or has no"
    b" <code>index.html</code> (the server log names it). Remove the setting to serve the"
    b" client shipped with fastchat. The API and WebSocket work as usual.</p></html>\n"
)


class StaticFiles:
    """The browser client, read once at start: only files that exist then can be served,
    so no request path can reach outside the folder."""

    def __init__(self, root: Path):
        self._files: dict[str, tuple[bytes, str, str]] = {}
        if not root.is_dir():
            log.warning("static folder %s not found: the browser client is not served", root)
            return
        if not (root / "index.html").is_file():
            log.warning("static folder %s has no index.html: GET / answers 404", root)
        for path in sorted(root.rglob("*")):
            if path.is_file() and not any(
                part.startswith(".") for part in path.relative_to(root).parts
            ):
                body = path.read_bytes()
                ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype in (
                    "application/javascript",
                    "application/json",
                ):
                    ctype += "; charset=utf-8"
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                self._files[path.relative_to(root).as_posix()] = (body, ctype, etag)

    def get(self, name: str, request: Request) -> Response | None:
        found = self._files.get(name)
        if found is None:
            return None
        body, ctype, etag = found
        headers = [
            ("Content-Type", ctype),
            ("ETag", etag),
            # index.html must be revalidated so a new release is picked up; assets too, cheaply.
            ("Cache-Control", "no-cache"),
            *_SECURITY_HEADERS,
        ]
        if name == "index.html":
            headers.append(("Content-Security-Policy", CLIENT_CSP))
        if request.header("if-none-match") == etag:
            return Response(304, b"", headers)
        return Response(200, body, headers)

    @staticmethod
    def no_client() -> Response:
        """``GET /`` without an ``index.html``: a page saying so (the log names the folder)."""
        return Response(
            404,
            _NO_CLIENT_PAGE,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Cache-Control", "no-store"),
                ("Content-Security-Policy", "default-src 'none'"),
                *_SECURITY_HEADERS,
            ],
        )
