"""The bounded tail of a process's output, shared by the sandbox backends (bubblewrap and Docker)."""

from __future__ import annotations

from collections import deque


class OutputTail:
    """Keeps the last `limit` bytes written to a stream."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.chunks.append(data)
        self.size += len(data)
        while self.size - len(self.chunks[0]) >= self.limit and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft())

    def text(self) -> str:
        data = b"".join(self.chunks)
        return data[-self.limit :].decode("utf-8", errors="replace") if self.limit else ""
