"""Micro-batching: concurrent requests within a short window share one batch.

One batch runs at a time on one worker thread (the torch forward and the index query
use that thread; the event loop keeps accepting requests meanwhile), so requests that
arrive while a batch runs form the next batch without waiting for the window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``run([items…])[i]``, batched up to ``max_batch`` items."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        window_s: float,
        max_batch: int,
        executor: ThreadPoolExecutor,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._run, self._window, self._max = run, window_s, max_batch
        self._executor, self._on_batch = executor, on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            await self._gather(batch, loop.time() + self._window)
            items = [item for item, _ in batch]
            self._on_batch(len(items))
            try:
                results = await loop.run_in_executor(self._executor, self._run, items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _gather(self, batch: list, deadline: float) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < self._max:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return
