"""The demo's closing table: what each step produced, with the figures labelled by what
they measure."""

from __future__ import annotations

from rich.table import Table


def summary_table(summary: dict) -> Table:
    world, replay = summary["world"], summary["replay"]
    table = Table(title="towerline demo", show_header=True)
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("users / pins", f"{world['users']:,} / {world['pins']:,}")
    table.add_row(
        "offsite events / engagements",
        f"{world['offsite_events']:,} / {world['engagement_events']:,}",
    )
    profiles = summary["profiles"]
    for view, rows in profiles["rows"].items():
        table.add_row(f"online rows: {view}", f"{rows:,}")
    table.add_row("online read user 1", " ".join(str(v) for v in profiles["user_1"].values()))
    pin = profiles["pin_1"]
    interests = ", ".join(
        f"{i}:{c:.2f}"
        for i, c in zip(pin["interest_ids"], pin["interest_confidences"], strict=True)
    )
    table.add_row("online read pin 1 interests", interests)
    _batch_rows(table, summary["batch"])
    table.add_row(
        f"engagements of {replay['dt']} sent (restamped to now)",
        f"{replay['sent']:,} in {replay['send_seconds']}s",
    )
    table.add_row(
        "consumed back / undecodable", f"{replay['consumed']:,} / {replay['undecodable']}"
    )
    for action, n in sorted(replay["by_action"].items()):
        table.add_row(f"  {action}", f"{n:,}")
    stream = replay["stream"]
    table.add_row("stream worker group join", f"{stream['join_seconds']}s")
    table.add_row(
        "stream worker applied / dead-lettered",
        f"{stream['applied']:,} / {stream['dead_lettered']}",
    )
    table.add_row("pipeline latency p50 / p99 ms (after join)", pct(stream["pipeline_latency_ms"]))
    table.add_row("event-time freshness p50 / p99 ms", pct(stream["freshness_ms"]))
    table.add_row("total time", f"{summary['seconds']}s")
    return table


def _batch_rows(table: Table, batch: dict) -> None:
    index = batch["index"]
    table.add_row("model version (train s)", f"{batch['version']} ({batch['train_seconds']}s)")
    table.add_row("history states encoded", f"{batch['encoded_users']:,}")
    table.add_row("corpus snapshot", f"{batch['corpus']['snapshot_id']}")
    table.add_row("index", f"{index['num_items']:,} items, dim {index['dim']}, {index['metric']}")
    table.add_row("serving version", f"{batch['serving']['model_version']}")


def pct(values: dict) -> str:
    return " / ".join("-" if values.get(q) is None else f"{values[q]:,.0f}" for q in ("p50", "p99"))


def epoch_line(row: dict) -> str:
    """One line per training epoch (the trainer's own bars are off in the demo)."""
    return f"  epoch {row['epoch']}: loss {row['loss']:.4f} ({row['seconds']:.1f}s)"


def serving_table(serving: dict) -> Table:
    """One request of each kind, then the version swap under continuous requests."""
    table = Table(title=f"towerline serve ({serving['url']})", show_header=True)
    for column in ("request", "version", "history", "context", "answer", "ms"):
        table.add_column(column, justify="right" if column == "ms" else "left")
    for row in serving["requests"]:
        table.add_row(*(str(row[c]) for c in ("request", "version", "history", "context", "answer", "ms")))  # fmt: skip
    swaps = serving["swaps"]
    switched = ", ".join(f"to {v} in {s}s" for v, s in swaps["switch_seconds"].items())
    table.add_row(
        "publish, then rollback, under load",
        swaps["served"],
        "-",
        "-",
        f"{swaps['requests']:,} requests, {swaps['failed']} failed; switched {switched}",
        "-",
    )
    return table
