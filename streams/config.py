"""The one frozen configuration of a stream worker. Only entry points read argv or env."""

from dataclasses import dataclass

DAY_S = 86_400.0


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs besides its clock and its stores.

    Durations are seconds. ``state_namespace`` (+ ``:<feast project>``) names the
    authoritative state (per-partition applied offsets, sequences, decayed counts): a Redis
    key prefix or a SQLite table prefix. It is *not* per consumer group: a new group over
    the same topic continues from the applied offsets instead of counting the topic again.
    """

    group_id: str
    bootstrap: str
    topic: str = "engagements"
    dead_letter_topic: str = "dead_letter"
    seq_len: int = 50
    half_life_s: float = DAY_S
    allowed_lateness_s: float = 7 * DAY_S
    future_skew_s: float = 300.0
    state_namespace: str = "towerline:streams"
    max_poll_records: int = 5_000
    poll_timeout_ms: int = 100
    # How long the broker may hold a fetch with no data. Tansu holds it that long even
    # when records arrive (kafka-python's default 500 ms gave p50 latency ~130 ms on a
    # 1k/s stream, 50 ms gave ~20 ms); a real Kafka answers as soon as data is there.
    fetch_max_wait_ms: int = 50
    # kafka-python checks each record batch's CRC32C with the `crc32c` C extension (a
    # dependency; in pure Python without it: ~14% of the worker's CPU). Off only if the
    # path is trusted.
    check_crcs: bool = True
    # How long a client waits for the first broker to answer before the worker gives up
    # (kafka-python's default, 30 s, is long for a mistyped address).
    bootstrap_timeout_ms: int = 10_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    auto_offset_reset: str = "earliest"
    client_id: str = "towerline-stream"
    metrics_port: int | None = None  # None: no HTTP endpoint; 0: any free port
    metrics_addr: str = "127.0.0.1"
    retry_backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        checks = {
            "seq_len": self.seq_len >= 1,
            "half_life_s": self.half_life_s > 0,
            "allowed_lateness_s": self.allowed_lateness_s >= 0,
            "future_skew_s": self.future_skew_s >= 0,
            "max_poll_records": self.max_poll_records >= 1,
            "group_id": bool(self.group_id),
            "topic": bool(self.topic) and self.topic != self.dead_letter_topic,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid WorkerConfig fields: {', '.join(bad)}")

    @property
    def half_life_ms(self) -> float:
        return self.half_life_s * 1000.0

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

    @property
    def future_skew_ms(self) -> int:
        return int(self.future_skew_s * 1000)
