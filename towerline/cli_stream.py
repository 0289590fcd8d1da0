"""`towerline stream run`: the stream worker's command line (registered by towerline.cli).

Only parses arguments and the environment, then calls ``streams.runner.run_worker``.
Also runnable on its own: ``python -m towerline.cli_stream --group G ...``.
"""

import logging
import os
import re
import signal
import threading
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"5m"``, ``"12h"``, ``"1d"`` or ``"250ms"``."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 5m, 12h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _duration(help_text: str) -> typer.models.OptionInfo:
    return typer.Option(metavar="DURATION", help=f"{help_text} (e.g. 90s, 5m, 12h, 1d).")


def stream_run_cmd(
    group: Annotated[
        str, typer.Option(help="Consumer group; workers of one group share the partitions.")
    ],
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            help="Kafka bootstrap servers (env TOWERLINE_BOOTSTRAP_SERVERS); default: the running dev broker.",
        ),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Dev broker run directory (env TOWERLINE_RUN_DIR).")
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic of Avro Engagement records.")] = "engagements",
    dead_letter_topic: Annotated[
        str, typer.Option(help="Where bad records go, with the reason in headers.")
    ] = "dead_letter",
    repo: Annotated[Path, typer.Option(help="The Feast repository.")] = Path("feature_repo"),
    online: Annotated[
        str | None,
        typer.Option(
            help="Online store: sqlite or redis (env TOWERLINE_ONLINE_STORE). The state store follows it."
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Redis host:port (env TOWERLINE_REDIS_URL) when --online redis."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Feast registry and SQLite store directory; default feature_repo/data."),
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Feast project (env TOWERLINE_FEAST_PROJECT).")
    ] = None,
    seq_len: Annotated[
        int, typer.Option(min=1, help="Pins kept per user in user_realtime_seq.")
    ] = 50,
    half_life: Annotated[str, _duration("Half-life of the decayed pin counts")] = "1d",
    allowed_lateness: Annotated[
        str, _duration("Older events are dead-lettered as too_late")
    ] = "7d",
    future_skew: Annotated[
        str, _duration("Events further ahead are dead-lettered as too_far_future")
    ] = "5m",
    state_namespace: Annotated[
        str, typer.Option(help="Prefix of the state keys/tables (the Feast project is appended).")
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
    """
    from streams.config import WorkerConfig
    from streams.runner import run_worker, tune_gc
    from towerline.featurestore import open_store
    from towerline.kafka_config import resolve_bootstrap, run_dir_from

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    env = os.environ
    store = open_store(
        repo,
        online=online or env.get("TOWERLINE_ONLINE_STORE"),
        redis_url=redis_url or env.get("TOWERLINE_REDIS_URL"),
        project=project or env.get("TOWERLINE_FEAST_PROJECT"),
        data_dir=data_dir,
    )
    cfg = WorkerConfig(
        group_id=group,
        bootstrap=resolve_bootstrap(bootstrap, env, run_dir_from(run_dir, env)),
        topic=topic,
        dead_letter_topic=dead_letter_topic,
        seq_len=seq_len,
        half_life_s=parse_duration(half_life),
        allowed_lateness_s=parse_duration(allowed_lateness),
        future_skew_s=parse_duration(future_skew),
        state_namespace=state_namespace,
        max_poll_records=max_poll_records,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        metrics_port=None if metrics_port < 0 else metrics_port,
        metrics_addr=metrics_addr,
        check_crcs=check_crcs,
    )
    tune_gc()
    stats = run_worker(cfg, store, _stop_on_signals(), on_start=partial(_started, cfg))
    typer.echo(f"stream worker stopped: {stats}", err=True)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the worker finishes its batch and leaves the group."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _started(cfg, port: int | None) -> None:
    where = f", metrics on http://{cfg.metrics_addr}:{port}/metrics" if port else ""
    typer.echo(
        f"stream worker: group {cfg.group_id} on {cfg.topic} @ {cfg.bootstrap}{where}", err=True
    )


if __name__ == "__main__":
    typer.run(stream_run_cmd)
