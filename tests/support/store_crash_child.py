"""Child process of test_store's crash test: writes messages until killed.

Usage: ``python tests/support/store_crash_child.py DB_PATH``. Prints the id of every message whose
commit was acknowledged, one per line, flushed at once, so the parent knows exactly which
rows must survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fastchat.config import StorageConfig
from fastchat.storage import base, ops, sqlite


async def main(path: str) -> None:
    config = StorageConfig(path=Path(path), batch_max=64, flush_interval_ms=1)
    sqlite.SqliteStore(config).open()
    writer = sqlite.WriteBehind(config, asyncio.get_running_loop())
    writer.start()

    def acked(message_id: str) -> base.OnDone:
        def done(error: BaseException | None) -> None:
            if error is None:
                sys.stdout.write(message_id + "\n")
                sys.stdout.flush()

        return done

    seq = 0
    while True:
        for _ in range(32):
            seq += 1
            op = ops.insert_message(
                id=f"m{seq}",
                room_id="general",
                seq=seq,
                user_id="u1",
                content=f"message {seq}",
                created_at="2026-01-01T00:00:00.000Z",
            )
            writer.submit(op, acked(f"m{seq}"))
        await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
