"""The ``fastchat`` command: run the server, manage accounts, read the audit log."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastchat.auth import PasswordHasher, normalize_email, validate_registration
from fastchat.clock import utc_now_iso
from fastchat.config import Config, ConfigError, load
from fastchat.errors import ChatError
from fastchat.ids import new_id
from fastchat.names import skeleton
from fastchat.roles import ROLES
from fastchat.storage import ops
from fastchat.storage.backends import make_store, make_writer
from fastchat.storage.base import FOREVER, Op, StorageError, Store
from fastchat.tls import server_context

_DEFAULT_CONFIG = "config.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastchat", description="A fast real-time chat server.")
    config_help = "config file (default: ./config.toml if there is one, else built-in defaults)"
    parser.add_argument("-c", "--config", default=None, metavar="FILE", help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)

    run_command = commands.add_parser("run", help="start the server")
    run_command.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the port (N > 1 needs broker.kind = redis and a shared store)",
    )
    # Set by `--workers N` for the processes it starts: listen there with SO_REUSEPORT.
    run_command.add_argument("--worker-port", type=int, default=None, help=argparse.SUPPRESS)

    user = commands.add_parser("user", help="manage accounts").add_subparsers(
        dest="user_command", required=True
    )
    create = user.add_parser("create", help="create an account (password from a prompt or stdin)")
    create.add_argument("username")
    create.add_argument("--email", help="default: USERNAME@localhost.invalid")
    create.add_argument("--role", choices=ROLES, default="user")
    set_role = user.add_parser("set-role", help="change an account's role")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=ROLES)
    ban = user.add_parser("ban", help="ban an account (its live connections are closed)")
    ban.add_argument("username")
    ban.add_argument("--seconds", type=int, default=0, help="ban length (default: permanent)")
    ban.add_argument("--reason", default=None)
    unban = user.add_parser("unban", help="lift an account's ban")
    unban.add_argument("username")

    audit = commands.add_parser("audit", help="print the moderation audit log, newest first")
    audit.add_argument("--limit", type=int, default=50)

    # `-c` is accepted after the subcommand too: `fastchat run -c x.toml`.
    for sub in (commands.choices["run"], create, set_role, ban, unban, audit):
        sub.add_argument(
            "-c", "--config", dest="config_sub", default=None, metavar="FILE", help=config_help
        )

    args = parser.parse_args(argv)
    path = args.config_sub or args.config
    on_defaults = path is None and not Path(_DEFAULT_CONFIG).is_file()
    try:
        config = load(None if on_defaults else path or _DEFAULT_CONFIG)
        tls = server_context(config.server) if args.command == "run" else None
    except ConfigError as exc:
        print(f"fastchat: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "run" and (refusal := _workers_refusal(config, args.workers)):
        print(f"fastchat: {refusal}", file=sys.stderr)
        return 2
    _setup_logging(config)
    if on_defaults:
        logging.getLogger("fastchat").info(
            "no -c and no ./%s: running on the built-in defaults", _DEFAULT_CONFIG
        )
    try:
        if args.command == "run" and args.workers > 1:
            from fastchat.workers import run_workers

            return run_workers(
                config, None if on_defaults else Path(path or _DEFAULT_CONFIG), args.workers
            )
        if args.command == "run":
            from fastchat.server import run

            try:
                if args.worker_port is not None:
                    server = dataclasses.replace(config.server, port=args.worker_port)
                    return run(dataclasses.replace(config, server=server), tls, reuse_port=True)
                return run(config, tls)
            except (StorageError, OSError) as exc:  # the database or the data folder
                print(f"fastchat: cannot start: {exc}", file=sys.stderr)
                return 2
        if args.command == "user" and args.user_command == "create":
            return _user_create(config, args.username, args.email, args.role)
        if args.command == "user" and args.user_command == "set-role":
            return _user_set_role(config, args.username, args.role)
        if args.command == "user" and args.user_command == "ban":
            return _user_ban(config, args.username, args.seconds, args.reason)
        if args.command == "user":
            return _user_unban(config, args.username)
        return _audit(config, args.limit)
    except (ChatError, ValueError, StorageError, ConnectionError) as exc:
        print(f"fastchat: {exc}", file=sys.stderr)
        return 1


def _workers_refusal(config: Config, workers: int) -> str | None:
    """Why ``--workers`` cannot be honoured with this configuration, if it cannot."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers == 1:
        return None
    if config.broker.kind == "local":
        return (
            f'--workers {workers} needs [broker] kind = "redis": the local broker reaches '
            "only the connections of its own process (see docs/cluster.md)"
        )
    if config.storage.backend == "sqlite":
        # Each process keeps rooms, members, users and its write-behind queue in memory and
        # assumes it is the database's only writer: several on one SQLite file would diverge.
        return (
            f'--workers {workers} needs [storage] backend = "postgres": several processes '
            "cannot share one SQLite database (see docs/cluster.md)"
        )
    return None


def _setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("fastchat.picows").setLevel(logging.WARNING)


@contextmanager
def _open_store(config: Config) -> Iterator[Store]:
    """The store, left as clean as it was found (the server uses the marker at start)."""
    store = make_store(config.storage)
    startup = store.open()
    try:
        yield store
    finally:
        if startup.clean:
            store.mark_clean_shutdown()
        store.close()


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise ValueError("passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\n")


def _user_create(config: Config, username: str, email: str | None, role: str) -> int:
    password = _read_password()
    # ".invalid" (RFC 2606): passes the email check and can never receive mail.
    email = email or f"{username}@localhost.invalid"
    registration = validate_registration(
        {"username": username, "email": email, "password": password}
    )
    with _open_store(config) as store:

        async def taken() -> bool:
            email = normalize_email(registration.email)
            return bool(
                await store.user_by_name(username)
                or await store.user_by_login(email)
                or await store.user_like(skeleton(username), skeleton(email))
            )

        if asyncio.run(taken()):
            print(
                f"fastchat: user {username!r} or that email (or one that looks the same)"
                " already exists",
                file=sys.stderr,
            )
            return 1

        async def hashed() -> str:
            hasher = PasswordHasher(config.auth.bcrypt_rounds, 1)
            try:
                return await hasher.hash(password)
            finally:
                hasher.close()

        _write(
            config,
            ops.insert_user(
                id=new_id(),
                username=registration.username,
                email=normalize_email(registration.email),
                password_hash=asyncio.run(hashed()),
                role=role,
                created_at=utc_now_iso(),
            ),
        )
    print(f"created {role} {username}")
    return 0


def _user_set_role(config: Config, username: str, role: str) -> int:
    with _open_store(config) as store:
        row = asyncio.run(store.user_by_name(username))
        if row is None:
            print(f"fastchat: no user {username!r}", file=sys.stderr)
            return 1
        if row.role == "admin" and role != "admin" and asyncio.run(store.admin_count()) <= 1:
            print(f"fastchat: {username} is the last admin", file=sys.stderr)
            return 1
        _write(
            config,
            _cli_audit("set_role", row.id, None, {"role": role}),
            ops.set_user_role(row.id, role),
        )
    print(f"{username} is now {role}")
    return 0


def _user_ban(config: Config, username: str, seconds: int, reason: str | None) -> int:
    if seconds < 0:
        raise ValueError("--seconds must not be negative")
    with _open_store(config) as store:
        row = asyncio.run(store.user_by_name(username))
        if row is None:
            print(f"fastchat: no user {username!r}", file=sys.stderr)
            return 1
        if row.role == "admin" and asyncio.run(store.admin_count()) <= 1:
            print(f"fastchat: {username} is the last admin", file=sys.stderr)
            return 1
        until = time.time() + seconds if seconds else FOREVER
        _write(
            config,
            _cli_audit("ban", row.id, reason, {"durationSeconds": seconds}),
            ops.set_user_ban(row.id, until, reason),
        )
    print(f"{username} is banned")
    return 0


def _user_unban(config: Config, username: str) -> int:
    with _open_store(config) as store:
        row = asyncio.run(store.user_by_name(username))
        if row is None:
            print(f"fastchat: no user {username!r}", file=sys.stderr)
            return 1
        _write(
            config, _cli_audit("unban", row.id, None, None), ops.set_user_ban(row.id, None, None)
        )
    print(f"{username} is no longer banned")
    return 0


def _cli_audit(
    action: str, target_id: str, reason: str | None, detail: dict[str, object] | None
) -> Op:
    """The audit entry of an operator's command (no actor: it came from the shell)."""
    return ops.insert_audit(
        at=utc_now_iso(),
        actor_id=None,
        action=action,
        target_user_id=target_id,
        reason=reason,
        detail={"via": "cli", **(detail or {})},
    )


def _write(config: Config, *writes: Op) -> None:
    """Commit operations, in order, through the same writer the server uses."""

    async def write() -> None:
        writer = make_writer(config.storage, asyncio.get_running_loop())
        writer.start()
        try:
            for op in writes[:-1]:
                writer.submit(op)
            await writer.execute(writes[-1])
        finally:
            await writer.close(10.0)

    asyncio.run(write())


def _audit(config: Config, limit: int) -> int:
    with _open_store(config) as store:
        for entry in asyncio.run(store.audit_entries(limit=limit)):
            print(
                f"{entry.at}  {entry.action:<14} actor={entry.actor_id}"
                f" target={entry.target_user_id}"
                f" room={entry.room_id or '-'} reason={entry.reason or '-'}"
                f"{'  ' + entry.detail if entry.detail else ''}"
            )
    return 0
