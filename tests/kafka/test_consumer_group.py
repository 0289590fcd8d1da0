"""Two members of one consumer group split the partitions and read each record once."""

import threading
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition

pytestmark = pytest.mark.kafka

N = 400


class Member(threading.Thread):
    """One group member polling in its own thread (a consumer is not thread-safe)."""

    def __init__(self, bootstrap: str, topic: str, group: str, group_cfg: dict) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **group_cfg,
        )
        self.consumer.subscribe([topic])
        self.assigned: frozenset[int] = frozenset()
        self.values: list[bytes] = []
        self.stop = threading.Event()
        self.committed = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for batch in self.consumer.poll(timeout_ms=100).values():
                self.values.extend(m.value for m in batch)
            self.assigned = frozenset(tp.partition for tp in self.consumer.assignment())
        self.consumer.commit()  # commit only after every record was "processed"
        self.committed.set()
        self.consumer.close()


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_group_members_share_partitions_and_read_each_record_once(
    bootstrap, new_topic, produce, fast_group, poll_until
) -> None:
    topic, group = new_topic("group"), f"g-{time.monotonic_ns()}"
    members = [Member(bootstrap, topic, group, fast_group) for _ in range(2)]
    for m in members:
        m.start()
    # Produce only once the group is stable, so no rebalance can replay records.
    wait_for(
        lambda: (
            all(m.assigned for m in members)
            and members[0].assigned | members[1].assigned == {0, 1, 2, 3}
            and not members[0].assigned & members[1].assigned
        ),
        30,
        "both members to hold disjoint halves of the 4 partitions",
    )
    sent = [f"v{i}".encode() for i in range(N)]
    produce(topic, [(f"k{i}".encode(), v) for i, v in enumerate(sent)])
    wait_for(lambda: sum(len(m.values) for m in members) >= N, 30, f"{N} records")
    time.sleep(0.3)  # a duplicate, if any, would arrive now
    for m in members:
        m.stop.set()
        m.join(timeout=15)
        assert m.committed.is_set()

    counts = Counter(v for m in members for v in m.values)
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1
    assert all(m.values for m in members), "both members should have received records"

    # A newcomer of the same group starts at the committed offsets: nothing old, only new.
    # It takes the partitions with assign() and reads the group's offsets (OffsetFetch)
    # instead of joining: Tansu 0.6 sometimes never completes a join into a group whose
    # several members all left (SyncGroup loops on REBALANCE_IN_PROGRESS).
    newcomer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )  # fmt: skip
    try:
        partitions = [TopicPartition(topic, p) for p in range(4)]
        newcomer.assign(partitions)
        assert sum(newcomer.committed(tp) or 0 for tp in partitions) == N
        old = [
            m for _ in range(5) for batch in newcomer.poll(timeout_ms=200).values() for m in batch
        ]
        assert old == []
        produce(topic, [(b"k-new", b"new")])
        assert [m.value for m in poll_until(newcomer, 1, 20)] == [b"new"]
    finally:
        newcomer.close()
