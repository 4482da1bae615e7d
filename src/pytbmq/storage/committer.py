"""Group commit and acknowledgement gating: the bridge from the router's change log to
the store, on the event loop.

Once per event-loop turn in which the router logged changes, `drain` hands the records to
the store as one numbered batch (the store merges whatever batches arrive while it is
committing into one transaction). A link that is about to send PUBACK, PUBREC, PUBCOMP,
SUBACK or UNSUBACK asks `idle()`: when everything logged so far is committed, the
acknowledgement goes out at once; otherwise the link holds it (and everything it writes
after it, to keep the connection's order) until `target()` — the batch holding every
change logged so far — is committed, when the store calls `committed_up_to` and each
waiting link's `release` runs. An acknowledgement therefore never promises more than
the disk holds. Created by the broker; used by links (pytbmq.link) through the Writer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pytbmq.router import Router
    from pytbmq.storage import Store


class Holder(Protocol):
    """A link holding writes until a batch commits."""

    def release(self, committed: int) -> None: ...


class Committer:
    __slots__ = (
        "_loop",
        "_router",
        "_scheduled",
        "_store",
        "_submitted_at",
        "_waiting",
        "batches_committed",
        "committed",
        "latency_last",
        "latency_max",
        "latency_sum",
        "submitted",
    )

    def __init__(self, router: Router, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._router = router
        self._store = store
        self._loop = loop
        self._scheduled = False
        self._waiting: dict[int, list[Holder]] = {}
        self.submitted = 0  # number of the last batch handed to the store
        self.committed = 0  # number of the last batch the store reported durable
        # Batch latency, submit to commit as the event loop sees it (for the metrics).
        self._submitted_at: deque[tuple[int, float]] = deque()
        self.batches_committed = 0
        self.latency_last = 0.0  # seconds
        self.latency_sum = 0.0
        self.latency_max = 0.0
        router.enable_changes(self._schedule)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain_soon)

    def _drain_soon(self) -> None:
        self._scheduled = False
        self.drain()

    def drain(self) -> None:
        """Submit everything the router logged since the last drain as one batch."""
        changes = self._router.take_changes()
        if changes:
            self.submitted += 1
            self._submitted_at.append((self.submitted, time.monotonic()))
            self._store.submit(self.submitted, changes)

    def after_read(self) -> None:
        """Called by a link after each read, in the middle of a loop turn: release what
        the store committed since, without waiting for its callback to come round at the
        end of the turn (under load one turn is many milliseconds). Changes are still
        handed over once per turn: smaller, more frequent batches cost the writer more
        than they save."""
        seq = self._store.committed_seq
        if seq > self.committed:
            self.committed_up_to(seq)

    def idle(self) -> bool:
        """True when every change logged so far is committed."""
        return self.committed == self.submitted and not self._router.changes

    def target(self) -> int:
        """The batch that holds every change logged so far (drained or not yet)."""
        return self.submitted + 1 if self._router.changes else self.submitted

    def wait(self, holder: Holder, seq: int) -> None:
        """Call `holder.release` once batch `seq` is committed."""
        self._waiting.setdefault(seq, []).append(holder)

    def committed_up_to(self, seq: int) -> None:
        """Called by the store, on the event loop: batches up to `seq` are durable."""
        if seq <= self.committed:
            return
        self.committed = seq
        self._timed(seq)
        waiting = self._waiting
        for done in sorted(s for s in waiting if s <= seq):
            for holder in waiting.pop(done):
                holder.release(seq)

    def _timed(self, seq: int) -> None:
        """Record the latency of the batches up to `seq`, just committed."""
        pending = self._submitted_at
        now = time.monotonic()
        while pending and pending[0][0] <= seq:
            latency = now - pending.popleft()[1]
            self.batches_committed += 1
            self.latency_last = latency
            self.latency_sum += latency
            if latency > self.latency_max:
                self.latency_max = latency

    async def flush(self) -> None:
        """Submit what is logged and wait until the store has committed it."""
        self.drain()
        await self._store.flush()
