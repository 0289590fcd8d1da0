"""`towerline stream run`: the stream worker's command line (registered by towerline.cli).

Only parses arguments and the environment, then calls ``streams.runner.run_worker``.
Also runnable on its own: ``python -m towerline.cli.stream --group G ...``.
"""

import logging
import signal
import threading
from functools import partial
from typing import Annotated

import typer

from towerline.cli import options as o


def _duration(help_text: str) -> typer.models.OptionInfo:
    return typer.Option(metavar="DURATION", help=f"{help_text} (e.g. 90s, 5m, 12h, 1d).")


def stream_run_cmd(
    group: Annotated[
        str, typer.Option(help="Consumer group; workers of one group share the partitions.")
    ],
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes of --group on this host, sharing the topic's partitions"
            " (more than the partitions sit idle); worker k on --metrics-port + k - 1.",
        ),
    ] = 1,
    bootstrap: o.Bootstrap = None,
    run_dir: o.RunDir = None,
    topic: Annotated[str, typer.Option(help="Topic of Avro Engagement records.")] = "engagements",
    dead_letter_topic: Annotated[
        str, typer.Option(help="Where bad records go, with the reason in headers.")
    ] = "dead_letter",
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    seq_len: Annotated[
        int, typer.Option(min=1, help="Pins kept per user in user_realtime_seq.")
    ] = 50,
    half_life: o.HalfLife = "1d",
    allowed_lateness: Annotated[
        str, _duration("Older events are dead-lettered as too_late")
    ] = "7d",
    future_skew: Annotated[
        str, _duration("Events further ahead are dead-lettered as too_far_future")
    ] = "5m",
    state_namespace: Annotated[
        str,
        typer.Option(
            help="Prefix of the state keys/tables (the Feast project is appended). The applied"
            " offsets in it belong to the topic: after a recreated topic or a new broker, use a"
            " new namespace (the worker stops and says so)."
        ),
    ] = "towerline:streams",
    max_poll_records: Annotated[int, typer.Option(min=1, help="Records per batch at most.")] = 5000,
    session_timeout_ms: Annotated[int, typer.Option(min=1000)] = 10_000,
    heartbeat_interval_ms: Annotated[int, typer.Option(min=100)] = 3_000,
    metrics_port: Annotated[
        int, typer.Option(help="Port of /metrics (Prometheus); 0: any free port; -1: none.")
    ] = 9108,
    metrics_addr: Annotated[str, typer.Option(help="Address /metrics listens on.")] = "127.0.0.1",
    check_crcs: Annotated[
        bool, typer.Option(help="Verify record CRCs (pure Python in kafka-python without crc32c).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ...")] = "INFO",
) -> None:
    """Keep user_realtime_seq and pin_engagement fresh in the Feast online store.

    A consumer-group worker on the engagements topic. Each batch is applied exactly once
    in effect: state, Feast rows and applied offsets commit in one transaction of the
    state store (Redis or SQLite, following --online). Bad records, and events older
    than --allowed-lateness or ahead by more than --future-skew, go to the dead-letter
    topic with their reason. Stops cleanly on SIGTERM or Ctrl-C.

    --processes N forks N workers of the group (about one per core: a worker is CPU
    bound); worker k serves /metrics on --metrics-port + k - 1. When one exits on its own,
    the others are stopped and the command exits non-zero naming it.

    Exits 1 with one line when Kafka or the Redis online store cannot be reached at start,
    or when the topic holds fewer records than were applied from it (recreated topic, new
    broker); 2 when --metrics-port is taken. A state store lost while running is retried
    with a growing backoff, logged with its address.
    """
    from streams.config import WorkerConfig
    from streams.runner import run_worker
    from streams.supervisor import run_workers
    from towerline.core.runtime import tune_gc

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)  # fmt: skip
    store = o.checked_store(repo, online, redis_url, data_dir, project)
    cfg = WorkerConfig(
        group_id=group,
        bootstrap=o.bootstrap(bootstrap, run_dir),
        topic=topic,
        dead_letter_topic=dead_letter_topic,
        seq_len=seq_len,
        half_life_s=o.parse_duration(half_life, "--half-life"),
        allowed_lateness_s=o.parse_duration(allowed_lateness, "--allowed-lateness"),
        future_skew_s=o.parse_duration(future_skew, "--future-skew"),
        state_namespace=state_namespace,
        max_poll_records=max_poll_records,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        metrics_port=None if metrics_port < 0 else metrics_port,
        metrics_addr=metrics_addr,
        check_crcs=check_crcs,
    )
    tune_gc()  # before forking: the children share the frozen start-up heap
    if processes > 1:
        open_store = partial(o.checked_store, repo, online, redis_url, data_dir, project)
        run_workers(cfg, open_store, processes, _stop_on_signals(), on_start=_child_started, on_stop=_child_stopped)  # fmt: skip
        return
    stats = run_worker(cfg, store, _stop_on_signals(), on_start=partial(_started, cfg))
    typer.echo(f"stream worker stopped: {stats}", err=True)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the worker finishes its batch and leaves the group."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _started(cfg, port: int | None, tag: str = "") -> None:
    where = f", metrics on http://{cfg.metrics_addr}:{port}/metrics" if port else ""
    typer.echo(
        f"{tag}stream worker: group {cfg.group_id} on {cfg.topic} @ {cfg.bootstrap}{where}",
        err=True,
    )


def _child_started(index: int, cfg, port: int | None) -> None:
    _started(cfg, port, tag=f"[worker {index + 1}] ")


def _child_stopped(index: int, stats) -> None:
    typer.echo(f"[worker {index + 1}] stream worker stopped: {stats}", err=True)


if __name__ == "__main__":
    typer.run(stream_run_cmd)
