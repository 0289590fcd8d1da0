"""The stream worker: consume → decode → handle → write state + Feast rows → commit.

One worker is one consumer-group member on the engagements topic. Per polled batch it
dead-letters what does not decode or is outside the event-time bounds (and waits for
those to be acknowledged), folds the rest into user sequences and pin deltas, commits
both with the partitions' new applied offsets in one state-store transaction that also
writes the Feast online rows, and only then commits the Kafka offsets (informational:
on every assignment the worker seeks to the state store's applied offset + 1). The
state-store commit of one batch overlaps the polling and folding of the next
(``streams.committer``).

Failures never stop the loop: the batch is dropped, its partitions are sought back to
the stored applied offsets, and the worker retries after a growing backoff (a state store
that cannot be reached is logged with its address and counted). What does stop it, with a
``TowerlineError`` saying what to do: no broker at the bootstrap address, and a topic that
holds fewer records than were applied from it (``streams.resets``).
"""

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from redis.exceptions import RedisError

from schemas.codec import AvroCodec
from streams.accounting import WorkerStats, account
from streams.committer import Committer
from streams.config import WorkerConfig
from streams.connect import connect
from streams.deadletter import DeadLetterError, DeadLetters
from streams.events import Event, Rejected, classify
from streams.metrics import StreamMetrics
from streams.resets import OffsetProbe, reset_error
from streams.sequence import EMPTY, Seq
from streams.state import NO_OFFSET, StateStore
from streams.update import BatchUpdate, OffsetMove, build_update
from towerline.core.kafka import ConsumerSettings, ProducerSettings

log = logging.getLogger(__name__)
# What a batch may fail with and be retried after: broker, state store, dead-letter topic.
RETRYABLE = (KafkaError, RedisError, sqlite3.Error, DeadLetterError, OSError)
STORE_ERRORS = (RedisError, sqlite3.Error)  # only the state store talks Redis / SQLite here
USER_CACHE_MAX = 500_000
__all__ = ["StreamWorker", "WorkerStats"]


class StreamWorker:
    """A consumer-group member keeping user_realtime_seq and pin_engagement online."""

    def __init__(
        self,
        cfg: WorkerConfig,
        state: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        codec: AvroCodec | None = None,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.cfg, self.state, self.clock = cfg, state, clock
        self.codec = codec or AvroCodec()
        self.metrics = metrics or StreamMetrics(clock)
        self.stats = WorkerStats()
        self.committer = Committer(state, cfg.topic, clock)
        # Speculative, i.e. including the batch in flight: what the next batch builds on.
        self._applied: dict[int, int] = {}  # assigned partition -> applied offset
        self._users: dict[int, Seq] = {}  # sequences of our partitions' users (we own them)
        self._resync: dict[int, int | None] = {}  # partition -> fallback offset to seek to
        self._consumer: KafkaConsumer | None = None
        self._backoff = 0.0
        self._probe = OffsetProbe()  # newly assigned partitions: is the log still that long?
        self._store_down = False
        self.assigned = threading.Event()  # set once the group gave this worker partitions

    # -- loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then finish the batch in flight and leave the group."""
        cfg = self.cfg
        worker_id = f"{cfg.client_id}-{os.getpid()}-{threading.get_ident()}"
        settings = ConsumerSettings(
            group_id=cfg.group_id,
            client_id=cfg.client_id,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_records=cfg.max_poll_records,
        )
        self._consumer = consumer = connect(
            KafkaConsumer,
            **settings.kwargs(cfg.bootstrap),
            timeout_ms=cfg.bootstrap_timeout_ms,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            check_crcs=cfg.check_crcs,
        )
        try:
            producer_kwargs = ProducerSettings(client_id=worker_id).kwargs(cfg.bootstrap)
            producer = connect(
                KafkaProducer, **producer_kwargs, timeout_ms=cfg.bootstrap_timeout_ms
            )
        except BaseException:
            consumer.close(autocommit=False)
            raise
        dead_letters = DeadLetters(producer, cfg.dead_letter_topic, worker_id)
        consumer.subscribe([cfg.topic], listener=_Rebalance(self))
        try:
            while not stop.is_set():
                self._step(consumer, dead_letters, stop)
            self._guarded(lambda: self._settle(consumer))
        finally:
            self.committer.close()
            consumer.close(autocommit=False)
            dead_letters.close()
            # The consumer and its listener point back at us: without this, the cache
            # waits for a full GC pass (rare after tune_gc) and then stalls it.
            self._users.clear()
            self._consumer = None

    def _step(self, consumer: KafkaConsumer, dead_letters: DeadLetters, stop: threading.Event):
        if self._backoff:
            stop.wait(self._backoff)
        self._guarded(lambda: self._poll_once(consumer, dead_letters))

    def _poll_once(self, consumer: KafkaConsumer, dead_letters: DeadLetters) -> None:
        if self._resync:
            self._settle(consumer)
            self._seek_from_state(consumer)
        polled = consumer.poll(self.cfg.poll_timeout_ms, self.cfg.max_poll_records)
        if polled:
            self._process(consumer, polled, dead_letters)
        else:
            self._settle(consumer)  # nothing new: account for the batch in flight now
        self._check_behind(self._probe.silent(self._highwater))
        self._report_lag(consumer)

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; a retryable failure backs off instead of stopping the worker."""
        try:
            action()
        except RETRYABLE as exc:
            self.stats.errors += 1
            self.metrics.errors.inc(1, type(exc).__name__)
            self._backoff = min(self.cfg.retry_backoff_max_s, max(0.1, self._backoff * 2))
            if isinstance(exc, STORE_ERRORS):
                self._store_failed(exc, f"retrying in {self._backoff:.1f}s")
            else:
                log.warning("batch failed, retrying in %.1fs: %r", self._backoff, exc)
        else:
            self._backoff = 0.0
            if self._store_down:  # a failure leaves partitions to resync: the store answered
                self._store_down = False
                self.metrics.store_up.set(1)
                log.info("state store at %s answers again", self.state.address)

    def _store_failed(self, exc: BaseException, then: str) -> None:
        self._store_down = True
        self.metrics.store_unavailable.inc()
        self.metrics.store_up.set(0)
        log.warning("state store at %s unavailable, %s: %s", self.state.address, then, exc)

    # -- one batch --------------------------------------------------------------------

    def _process(self, consumer: KafkaConsumer, polled: dict, dead_letters: DeadLetters) -> None:
        started = time.perf_counter()
        records, firsts, lasts = self._fresh(polled)
        if not records:
            return
        submitted = False
        try:
            events, rejected, now_ms = self._classify(records, dead_letters)
            # Settle only now: the previous batch's commit ran while we polled and decoded;
            # reading sequences before it ends would queue behind it on Redis anyway.
            if self._settle(consumer):  # else the previous batch failed: this one is void
                update = self._fold(events, lasts, now_ms)
                self.committer.submit(update, rejected, firsts, started)
                submitted = True
                self._users.update(update.users)
                self._applied.update((p, m.applied) for p, m in update.offsets.items())
        finally:
            if not submitted:
                self._drop(firsts)

    def _fresh(self, polled: dict) -> tuple[list, dict[int, int], dict[int, int]]:
        """Records above the applied offsets, and each partition's first and last offset."""
        records, firsts, lasts, stale, behind = [], {}, {}, 0, {}
        for tp, polled_batch in polled.items():
            batch, gap = self._probe.records(tp.partition, polled_batch, self._highwater)
            if gap is not None:
                behind[tp.partition] = gap
            applied = self._applied.get(tp.partition, NO_OFFSET)
            fresh = [r for r in batch if r.offset > applied]
            stale += len(batch) - len(fresh)
            if fresh:
                records += fresh
                firsts[tp.partition], lasts[tp.partition] = fresh[0].offset, fresh[-1].offset
        self._check_behind(behind)
        self.stats.consumed += len(records) + stale
        self.metrics.consumed.inc(len(records) + stale)
        if stale:
            self.metrics.already_applied.inc(stale)
        return records, firsts, lasts

    def _classify(
        self, records: list, dead_letters: DeadLetters
    ) -> tuple[list[Event], list[Rejected], int]:
        """Decode and check event times; dead letters are acknowledged before we go on."""
        cfg, now_ms = self.cfg, int(self.clock() * 1000)
        events, rejected = classify(
            records, self.codec, now_ms, cfg.allowed_lateness_ms, cfg.future_skew_ms
        )
        if rejected:
            dead_letters.send(rejected)  # before the applied offsets move past them
        return events, rejected, now_ms

    def _fold(self, events: list[Event], lasts: dict[int, int], now_ms: int) -> BatchUpdate:
        """The batch's state changes, on top of the (speculative) state we hold."""
        cfg = self.cfg
        moves = {p: OffsetMove(self._applied.get(p, NO_OFFSET), last) for p, last in lasts.items()}
        self._load_missing(events)
        return build_update(
            events,
            self._users,
            moves,
            max_len=cfg.seq_len,
            half_life_ms=cfg.half_life_ms,
            write_ms=now_ms,
        )

    def _load_missing(self, events: list[Event]) -> None:
        """Bring the sequences of the events' users into the cache (absent users: empty)."""
        cache = self._users
        missing = {e.user_id for e in events if e.user_id not in cache}
        if not missing:
            return
        if len(cache) + len(missing) > USER_CACHE_MAX:
            cache.clear()  # crude, but a miss only costs a read
            missing = {e.user_id for e in events}
        loaded = self.state.load_users(missing)
        cache.update(dict.fromkeys(missing, EMPTY))
        cache.update(loaded)

    def _settle(self, consumer: KafkaConsumer) -> bool:
        """Account for the commit in flight; False (and a resync) if it failed."""
        done = self.committer.settle()
        if done is None:
            return True
        if done.ok:
            account(self.metrics, self.stats, self.cfg.topic, done)
            offsets = {TopicPartition(self.cfg.topic, p): OffsetAndMetadata(m.applied + 1, "", -1) for p, m in done.update.offsets.items()}  # fmt: skip
            consumer.commit_async(offsets, callback=_log_commit)
            return True
        self._drop(done.firsts)
        if done.error is not None:
            raise done.error  # retryable: backoff; anything else is a bug and stops the worker
        self.stats.conflicts += 1
        self.metrics.conflicts.inc()
        log.warning("dropped a batch: %s (another worker applied it)", done.conflict)
        return False

    def _drop(self, firsts: dict[int, int]) -> None:
        """Forget speculation; seek these partitions back (from the state store) before polling."""
        self._users.clear()
        for p, first in firsts.items():
            known = self._resync.get(p)
            self._resync[p] = first if known is None else min(known, first)

    # -- partitions -------------------------------------------------------------------

    def on_assigned(self, partitions: list[int]) -> None:
        """Seek to the stored applied offset + 1 (runs inside poll, before any fetch)."""
        self.committer.wait()  # so the store already holds the batch in flight, if it succeeds
        self._users.clear()
        self._resync.update({p: None for p in partitions})
        self._probe.assigned(partitions, self._highwater)
        if partitions:
            self.assigned.set()
        try:
            self._seek_from_state(self._consumer)
        except RETRYABLE as exc:  # pause until the state store answers; see _poll_once
            if isinstance(exc, STORE_ERRORS):
                self._store_failed(exc, "pausing the new partitions until it answers")
            else:
                log.warning("cannot read applied offsets yet: %r", exc)
            self._consumer.pause(*(TopicPartition(self.cfg.topic, p) for p in self._resync))

    def on_revoked(self, partitions: list[int]) -> None:
        self.committer.wait()
        self._users.clear()
        for p in partitions:
            self._applied.pop(p, None)
            self._resync.pop(p, None)
            self._probe.forget(p)
            self.metrics.forget_partition(self.cfg.topic, p)

    def _seek_from_state(self, consumer: KafkaConsumer) -> None:
        """Seek partitions awaiting a resync to applied + 1 (a probe: applied), or their fallback."""
        assigned = {tp.partition for tp in consumer.assignment() if tp.topic == self.cfg.topic}
        wanted = {p: f for p, f in self._resync.items() if p in assigned}
        applied = self.state.applied(self.cfg.topic, wanted)
        for p, fallback in wanted.items():
            tp = TopicPartition(self.cfg.topic, p)
            self._applied[p] = applied[p]
            if applied[p] != NO_OFFSET:
                consumer.seek(tp, self._probe.seek_offset(p, applied[p]))
                continue
            self._probe.nothing_applied(p)
            if fallback is not None:
                consumer.seek(tp, fallback)
            # else: nothing applied yet, Kafka's committed offset / auto_offset_reset decides
        consumer.resume(*(TopicPartition(self.cfg.topic, p) for p in wanted))
        self._resync.clear()

    def _highwater(self, partition: int) -> int | None:
        return self._consumer.highwater(TopicPartition(self.cfg.topic, partition))

    def _check_behind(self, behind: dict) -> None:
        """Stop when a partition holds fewer records than were applied (``streams.resets``)."""
        if behind:
            how = self.state.offsets_reset_hint(self.cfg.topic, behind)
            raise reset_error(self.cfg.topic, behind, self.cfg.state_namespace, how)

    def _report_lag(self, consumer: KafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None and tp.partition in self._applied:
                lag = max(0, high - self._applied[tp.partition] - 1)
                self.metrics.lag_records.set(lag, tp.topic, str(tp.partition))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked) -> None:
        self.worker.on_revoked(
            [tp.partition for tp in revoked if tp.topic == self.worker.cfg.topic]
        )

    def on_partitions_assigned(self, assigned) -> None:
        self.worker.on_assigned(
            [tp.partition for tp in assigned if tp.topic == self.worker.cfg.topic]
        )


def _log_commit(offsets: dict, response: object) -> None:
    if isinstance(response, Exception):  # informational only: the state store is authoritative
        log.info("Kafka offset commit failed (harmless, will be redone): %r", response)
