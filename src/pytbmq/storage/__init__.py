"""Where broker state goes to survive: the Store interface and its back-ends.

The router owns live state; a Store only persists it. At start the broker opens the
store and hands what it loaded (pytbmq.changes.StoredState) to `Router.restore`; while
running, the broker's Committer (pytbmq.storage.committer) submits the router's change
log in numbered batches, and the store calls back, on the event loop, with the number of
the last batch it has committed. The router and links never see which back-end is used.

Back-ends: SqliteStore (pytbmq.storage.sqlite, the default: embedded, durable) and
MemoryStore (state lives as long as the process; for tests and benchmarks). Redis and
PostgreSQL back-ends implement the same Protocol. Called by the broker and the CLI only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pytbmq.changes import Change, StoredState

if TYPE_CHECKING:
    from pytbmq.config import Settings

DATABASE_FILE = "pytbmq.db"


class Store(Protocol):
    """A place broker state is loaded from at start and written to while running."""

    name: str
    durable: bool  # False: nothing survives the process; the router logs no changes
    location: str  # for log lines: a file, a URL...
    # The last batch known durable; may be written by another thread, and is set before
    # on_committed is scheduled (readers on the loop may see it earlier than the call).
    committed_seq: int

    async def open(self, on_committed: Callable[[int], None]) -> StoredState:
        """Open (creating or migrating as needed) and load the stored state.

        `on_committed(seq)` is called on the event loop once every batch up to `seq`
        is durable. Raises StorageError, naming what is wrong and where.
        """
        ...

    def submit(self, seq: int, changes: list[Change]) -> None:
        """Queue one batch of change records; `seq` grows by one per batch."""
        ...

    async def flush(self) -> None:
        """Return once every batch submitted so far is committed."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    """Keeps nothing beyond the process: sessions end with the broker."""

    name = "memory"
    durable = False
    location = "memory"
    committed_seq = 0

    async def open(self, on_committed: Callable[[int], None]) -> StoredState:
        return StoredState()

    def submit(self, seq: int, changes: list[Change]) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def make_store(settings: Settings) -> Store:
    """The store PYTBMQ_STORAGE selects."""
    if settings.pytbmq_storage == "memory":
        return MemoryStore()
    from pytbmq.storage.sqlite import SqliteStore

    return SqliteStore(settings.pytbmq_data_dir / DATABASE_FILE, sync=settings.pytbmq_storage_sync)
