"""Wakes agents' long-polls as soon as their assignments change.

The store bumps a node's `assign_index` in the same transaction that changes what the node
should run, then calls `AssignmentWaiters.notify`; each waiting request re-reads its node's
index and returns when it moved past the one the agent already has. When the controller stops,
`close` answers every waiting request at once, so a held long-poll never delays a shutdown
(the agent simply polls the next controller).
"""

from __future__ import annotations

import asyncio
from typing import Callable


class AssignmentWaiters:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._closed = False

    def close(self) -> None:
        """Answer every waiter now, and every later one at once."""
        self._closed = True
        self.notify()

    def notify(self) -> None:
        """Wake every waiter; they re-check their own node's index."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, current_index: Callable[[], int], known: int,
                       timeout: float) -> int:
        """Return the node's index once it differs from `known`, or at `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            index = current_index()
            remaining = deadline - loop.time()
            # An index from the future means the agent last spoke to another store (a restored
            # or new database): answer at once so it resynchronises.
            if index != known or remaining <= 0 or self._closed:
                return index
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass
