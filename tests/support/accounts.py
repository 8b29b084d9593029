"""Accounts for tests and load tools: the one password, registering over HTTP, and creating
accounts of any role with the CLI."""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.support.server import ServerProcess

PASSWORD = "correct horse battery"
_names = itertools.count()


def registration(username: str, email_domain: str = "example.com") -> dict[str, str]:
    """The body of ``POST /api/auth/register`` for ``username`` (password :data:`PASSWORD`)."""
    return {"username": username, "email": f"{username}@{email_domain}", "password": PASSWORD}


def register(server: str | httpx.Client, username: str | None = None) -> dict[str, Any]:
    """Register a fresh account; returns ``{"user": ..., "token": ...}``.

    ``server``: its base URL, or a client made with ``base_url`` to reuse (making one per
    call costs ~150 ms).
    """
    name = username or f"user{next(_names)}_{uuid.uuid4().hex[:6]}"
    if isinstance(server, httpx.Client):
        response = server.post("/api/auth/register", json=registration(name))
    else:
        response = httpx.post(f"{server}/api/auth/register", json=registration(name))
    assert response.status_code == 201, response.text
    return response.json()


def create_account(server: ServerProcess, role: str, name: str | None = None) -> str:
    """An account of ``role`` made with ``fastchat user create`` (password on stdin), the way
    an operator would, before it first logs in; its username."""
    name = name or f"{role}_{uuid.uuid4().hex[:8]}"
    done = server.cli("user", "create", name, "--role", role, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"created {role} {name}"
    return name
