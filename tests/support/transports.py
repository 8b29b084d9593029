"""Fake socket transports to put under a connection or a protocol in-process."""

from __future__ import annotations


class CountingTransport:
    """A transport whose peer reads at once: counts the writes and bytes, keeps the last."""

    __slots__ = ("bytes", "closed", "last", "writes")

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0
        self.last = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1
        self.last = data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class RecordingTransport(CountingTransport):
    """A :class:`CountingTransport` that also keeps every byte written, in ``data``."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        super().write(data)
        self.data += data
