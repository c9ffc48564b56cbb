"""Waiting for a condition instead of sleeping: the one polling helper the tests share.

`wait_until` calls a predicate until it returns something truthy and returns that value; after
`timeout` seconds it fails the test with what it waited for and the last value it saw. Exceptions
listed in `ignore` count as "not yet" (a process still starting refuses connections).
`wait_until_async` does the same in async tests, where the predicate may be a coroutine
function, and sleeps without blocking the event loop. Give timeouts with room for a slow CI
machine: the wait ends as soon as the condition holds, so a generous one costs nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

NOTHING: tuple[type[BaseException], ...] = ()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, *,
               what: str = "", ignore: tuple[type[BaseException], ...] = NOTHING) -> Any:
    """The first truthy value of `predicate()`; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = _call(predicate, ignore)
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            _give_up(timeout, what or predicate, last)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float = 20.0,
                           interval: float = 0.1, *, what: str = "",
                           ignore: tuple[type[BaseException], ...] = NOTHING) -> Any:
    """`wait_until` for async tests; `predicate` may return an awaitable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignore as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() >= deadline:
            _give_up(timeout, what or predicate, last)
        await asyncio.sleep(interval)


def _call(predicate: Callable[[], Any], ignore: tuple[type[BaseException], ...]) -> Any:
    try:
        return predicate()
    except ignore as exc:
        return exc


def _give_up(timeout: float, what: object, last: object) -> None:
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
