"""Run one coroutine per item with at most ``parallel`` in flight, results in the items' order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

__all__ = ["gather_bounded"]

T = TypeVar("T")
R = TypeVar("R")


async def gather_bounded(fn: Callable[[T], Awaitable[R]], items: Iterable[T], parallel: int) -> list[R]:
    """``[await fn(item) for item in items]``, ``parallel`` at a time (``asyncio.gather`` order)."""
    gate = asyncio.Semaphore(parallel)

    async def one(item: T) -> R:
        async with gate:
            return await fn(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
