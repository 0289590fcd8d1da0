"""Micro-batching: concurrent requests within a short window share one batch.

One batch runs at a time, on the event loop's thread (or, given an executor, on its
thread), so requests that arrive while a batch runs form the next batch without waiting
for the window. The window itself is only waited for when the recent arrival rate says
another request is likely to come within it: at low rates a lone request never pays the
window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
SETTLE_TURNS = 3


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` -> ``run([items…])[i]``, batched up to ``max_batch`` items."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        window_s: float,
        max_batch: int,
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self._run, self._window, self._max = run, window_s, max_batch
        self._executor, self._on_batch = executor, on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._gap_s = 1.0  # smoothed time between arrivals
        self._last_arrival = 0.0

    async def submit(self, item: T) -> R:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._gap_s = 0.9 * self._gap_s + 0.1 * min(now - self._last_arrival, 1.0)
        self._last_arrival = now
        future: asyncio.Future[R] = loop.create_future()
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
            if self._executor is None:
                await _settle()
            wait = self._window if self._gap_s < self._window else 0.0
            await self._gather(batch, loop.time() + wait)
            items = [item for item, _ in batch]
            self._on_batch(len(items))
            try:
                if self._executor is None:
                    results = self._run(items)
                else:
                    results = await loop.run_in_executor(self._executor, self._run, items)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                await asyncio.sleep(0)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            # Let this batch's requests answer before the next batch runs: with a queue
            # already full, nothing below would yield to the event loop.
            await asyncio.sleep(0)

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


async def _settle() -> None:
    """A batch run on the event loop holds it: requests that arrived meanwhile are still
    unparsed. Parsing one and handing it to ``submit`` takes two loop turns (the I/O poll
    creates its task, the task runs), so a few turns let them join this batch, as they
    would have queued behind a batch running on a thread."""
    for _ in range(SETTLE_TURNS):
        await asyncio.sleep(0)
