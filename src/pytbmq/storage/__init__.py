"""Where broker state goes to survive: the Store interface and its back-ends.

The router owns live state; a Store only persists it. In this release the only
back-end is MemoryStore (state lives as long as the process); the embedded SQLite
store and later Redis/PostgreSQL back-ends implement the same Protocol, so the
router and links never change when one is swapped in. Called by the broker only.
"""

from __future__ import annotations

from typing import Protocol


class Store(Protocol):
    """A place broker state is loaded from at start and flushed to before exit."""

    name: str

    async def open(self) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Keeps nothing beyond the process: sessions end with the broker."""

    name = "memory"

    async def open(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
