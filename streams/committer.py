"""State-store commits on their own thread, one in flight, so batches overlap.

While Redis runs batch k's script (it holds no GIL: it is another process), the worker
thread already polls and folds batch k+1. That batch is built *speculatively* on k's
outcome (k's sequences, k's applied offsets as the expected ones); if k fails its
compare-and-set, k+1 fails too (its expected offsets were never stored) and both are
dropped and re-read, so speculation never weakens exactly-once.
"""

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from streams.events import Rejected
from streams.state import Conflict, StateStore
from streams.update import BatchUpdate


@dataclass
class Settled:
    """A finished commit and what the worker needs to account for it."""

    update: BatchUpdate
    rejected: list[Rejected]
    firsts: dict[int, int]  # first offset per partition: where to seek back on failure
    conflict: Conflict | None
    error: BaseException | None  # the commit raised: outcome unknown, re-read the store
    done_ms: int  # wall clock when the commit returned: the online write time
    seconds: float  # poll to commit returned

    @property
    def ok(self) -> bool:
        return self.conflict is None and self.error is None


@dataclass
class _InFlight:
    future: Future
    update: BatchUpdate
    rejected: list[Rejected]
    firsts: dict[int, int]
    started: float


class Committer:
    """At most one ``StateStore.commit`` in flight."""

    def __init__(self, state: StateStore, topic: str, clock: Callable[[], float]) -> None:
        self.state, self.topic, self.clock = state, topic, clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-commit")
        self._inflight: _InFlight | None = None

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    def submit(
        self, update: BatchUpdate, rejected: list[Rejected], firsts: dict[int, int], started: float
    ) -> None:
        assert self._inflight is None, "settle() the previous commit first"
        # Serialise here, on the worker thread: the pool thread then only waits on Redis
        # and barely needs the GIL, instead of fighting the worker thread for it.
        future = self._pool.submit(self._commit, self.state.prepare(self.topic, update))
        self._inflight = _InFlight(future, update, rejected, firsts, started)

    def _commit(self, prepared: object) -> tuple[Conflict | None, int, float]:
        conflict = self.state.apply(prepared)
        return conflict, int(self.clock() * 1000), time.perf_counter()

    def settle(self) -> Settled | None:
        """Wait for the commit in flight and return its outcome; None if there is none."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return None
        conflict, error, done_ms, done = None, None, 0, time.perf_counter()
        try:
            conflict, done_ms, done = inflight.future.result()
        except Exception as exc:  # handed to the worker, which decides (retry or crash)
            error = exc
        return Settled(
            inflight.update, inflight.rejected, inflight.firsts, conflict, error, done_ms,
            done - inflight.started,
        )  # fmt: skip

    def wait(self) -> None:
        """Block until nothing is in flight (the outcome is left for ``settle``)."""
        if self._inflight is not None:
            self._inflight.future.exception()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
