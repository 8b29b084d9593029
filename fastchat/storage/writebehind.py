"""The write-behind queue both backends share: ops queued on the loop thread, committed in
batches by a writer thread, a failing batch retried with backoff until it commits, and each
op's outcome delivered back on the loop thread.

A backend subclasses :class:`BatchWriter` and says how one batch is written
(:meth:`BatchWriter._attempt`), which errors are storage failures to retry
(``_failures``), and what a failed attempt leaves to clean up (:meth:`BatchWriter._failed`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastchat.config import StorageConfig
from fastchat.errors import Overloaded, StorageUnavailable
from fastchat.storage.base import OnDone, Op

log = logging.getLogger("fastchat.store")

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0

Entry = tuple[Op, OnDone | None]
"""A queued op and what to call once its batch committed."""


def entry_name(entry: Entry) -> str:
    """The op's name (consecutive ops of one name are written by one statement)."""
    return entry[0][0]


class _Abandoned(Exception):
    """close() ran out of time while the storage was failing."""


class BatchWriter:
    """Commits queued write operations in batches on its own thread.

    ``submit`` is called on the loop thread; outcomes come back on the loop thread once the
    batch holding the op has committed. The statistics attributes are written by the
    writer thread and read by the metrics module.
    """

    _failures: type[Exception] | tuple[type[Exception], ...] = ()
    """The backend's storage failures: the batch is retried until it commits."""

    def __init__(self, config: StorageConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self._queue: deque[Entry] = deque()
        self._batch: list[Entry] = []  # taken from the queue, not yet committed
        self._limit = config.queue_max  # set to 0 by close() to refuse new ops
        self._batch_max = config.batch_max
        self._interval = config.flush_interval_ms / 1000
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._sleeping = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None
        self.batches_committed = 0
        self.ops_committed = 0
        self.op_errors_total = 0
        self.failures_total = 0
        self.commit_seconds_total = 0.0
        self.recent_commit_seconds: deque[float] = deque(maxlen=2048)
        self.healthy = True
        self.last_error: str | None = None

    @property
    def queue_depth(self) -> int:
        """Operations submitted and not yet committed."""
        return len(self._queue) + len(self._batch)

    def start(self) -> None:
        """Start the writer thread."""
        self._finished = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="fastchat-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op, on_done: OnDone | None = None) -> bool:
        """Queue ``op``; False (nothing queued) when ``queue_max`` ops are pending.

        ``on_done(None)`` or ``on_done(error)`` is called on the loop thread after the
        op's batch commits.
        """
        queue = self._queue
        if len(queue) + len(self._batch) >= self._limit:
            return False
        queue.append((op, on_done))
        # Event.set() takes a lock: only wake a writer that sleeps, or cut a linger short
        # once a full batch is waiting.
        if (self._sleeping or len(queue) >= self._batch_max) and not self._wake.is_set():
            self._wake.set()
        return True

    async def execute(self, op: Op) -> None:
        """Write ``op`` and wait for its commit; raises ``Overloaded`` or the op's error."""
        future: asyncio.Future[None] = self._loop.create_future()

        def done(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        if not self.submit(op, done):
            raise Overloaded("storage queue is full")
        await future

    async def close(self, timeout: float) -> int:
        """Commit everything queued, stop the thread; return how many ops were NOT written.

        If the storage is still failing after ``timeout`` seconds, the writer gives up: the
        unwritten ops get ``on_done(StorageUnavailable)`` and are counted.
        """
        self._limit = 0
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._finished is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._finished), timeout)
            except TimeoutError:
                log.error(
                    "storage writer: giving up after %.1fs (%s); %d ops not written",
                    timeout,
                    self.last_error,
                    self.queue_depth,
                )
                self._abort.set()
                await self._finished
            self._thread.join()
        self._close_connections()
        unwritten = [*self._batch, *self._queue]
        self._batch = []
        self._queue.clear()
        message = f"storage unavailable: {self.last_error}"
        self._deliver(unwritten, {i: StorageUnavailable(message) for i in range(len(unwritten))})
        return len(unwritten)

    # -- the backend's part

    def _attempt(self, batch: list[Entry]) -> dict[int, BaseException] | None:
        """Write ``batch`` in one transaction: None, or the errors of the ops that failed
        alone (the others committed); raise one of ``_failures`` to have it retried."""
        raise NotImplementedError

    def _failed(self, exc: BaseException) -> str:
        """Clean up after a failed attempt; returns the failure as ``last_error`` says it."""
        raise NotImplementedError

    def _after_batch(self) -> None:
        """Called on the writer thread after each batch (and its outcomes) went out."""

    def _close_connections(self) -> None:
        """Close what the writer opened (the thread has stopped)."""

    def _failure_context(self) -> str:
        """Where the storage is, for the log line of a failure."""
        return ""

    # -- writer thread

    def _run(self) -> None:
        assert self._finished is not None
        try:
            self._work()
        except _Abandoned:
            pass  # close() accounts for the ops left behind
        except Exception as exc:
            log.exception("storage writer crashed")
            self._limit = 0
            self.healthy = False
            self.last_error = f"writer crashed: {exc!r}"
        finally:
            self._notify(self._finished.set_result, None)

    def _work(self) -> None:
        queue = self._queue
        # Every op in the queue arrived at or after `since`: flushing at `since + interval`
        # keeps each op's wait within flush_interval_ms without timestamping each submit.
        since = time.monotonic()
        while True:
            self._wake.clear()
            if not queue:
                if self._stopping:
                    return
                self._sleeping = True
                if not queue:
                    self._wake.wait()
                self._sleeping = False
                since = time.monotonic()
                continue
            if len(queue) < self._batch_max and not self._stopping:
                remaining = since + self._interval - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
            batch = self._batch
            for _ in range(min(len(queue), self._batch_max)):
                batch.append(queue.popleft())
            if not queue:
                since = time.monotonic()
            errors = self._commit(batch)
            self._batch = []
            self._notify(self._deliver, batch, errors)
            self._after_batch()

    def _commit(self, batch: list[Entry]) -> dict[int, BaseException] | None:
        """Write ``batch`` in one transaction, retrying storage failures until it commits."""
        delay = _BACKOFF_FIRST
        failed_at = 0.0
        while True:
            started = time.perf_counter()
            try:
                errors = self._attempt(batch)
                break
            except self._failures as exc:
                self.last_error = self._failed(exc)
                self.failures_total += 1
                if self.healthy:
                    self.healthy = False
                    failed_at = time.monotonic()
                    log.error(
                        "storage write failed: %s%s; retrying a batch of %d ops, "
                        "%d more queued, nothing acknowledged until it succeeds",
                        self.last_error,
                        self._failure_context(),
                        len(batch),
                        len(self._queue),
                    )
            if self._abort.wait(delay):
                raise _Abandoned
            delay = min(delay * 2, _BACKOFF_MAX)
        elapsed = time.perf_counter() - started
        if not self.healthy:
            self.healthy = True
            self.last_error = None
            log.warning(
                "storage recovered after %.1fs; %d queued",
                time.monotonic() - failed_at,
                len(self._queue),
            )
        self.batches_committed += 1
        self.ops_committed += len(batch) - (len(errors) if errors else 0)
        self.commit_seconds_total += elapsed
        self.recent_commit_seconds.append(elapsed)
        return errors

    def _notify(self, callback: Callable[..., object], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            log.warning("storage writer: event loop closed, a result was not delivered")

    @staticmethod
    def _deliver(batch: list[Entry], errors: dict[int, BaseException] | None) -> None:
        for index, (_, on_done) in enumerate(batch):
            if on_done is not None:
                try:
                    on_done(errors.get(index) if errors else None)
                except Exception:
                    log.exception("storage on_done callback failed")
