"""Long-polls of agents' assignments: woken by a change, and answered at once when the
controller stops, so a held poll never delays a shutdown."""

from __future__ import annotations

import asyncio

from paas.controller.longpoll import AssignmentWaiters


async def test_a_change_wakes_a_waiter_with_the_new_index() -> None:
    waiters = AssignmentWaiters()
    index = {"n1": 3}
    waiting = asyncio.create_task(waiters.wait_for(lambda: index["n1"], 3, timeout=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    index["n1"] = 4
    waiters.notify()
    assert await asyncio.wait_for(waiting, 5) == 4


async def test_close_answers_held_and_later_polls_with_the_current_index() -> None:
    waiters = AssignmentWaiters()
    held = asyncio.create_task(waiters.wait_for(lambda: 3, 3, timeout=60))
    await asyncio.sleep(0)
    waiters.close()
    assert await asyncio.wait_for(held, 5) == 3
    assert await asyncio.wait_for(waiters.wait_for(lambda: 3, 3, timeout=60), 5) == 3
