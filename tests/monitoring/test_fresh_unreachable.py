"""A source that cannot be reached is named; `check` exits 2 (cannot measure), not 0 or 1."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from monitor_kit import HOUR, NOW, record

from monitoring.collect import Sources, collect
from monitoring.model import HOST_UP, VERSION_SKEW
from serving.server import free_port
from tests.cli.cli_kit import assert_user_error, towerline
from towerline.core.featurestore import open_store
from towerline.core.ledger import SUCCESS


def test_check_exits_2_naming_an_unreachable_redis(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    now = dt.datetime.now(dt.UTC)
    for job in ("load-profiles", "batch encode"):
        record(ledger, job, SUCCESS, now - dt.timedelta(hours=1))
    ran = towerline(
        "freshness", "check", "--ledger", ledger, "--history", tmp_path / "h.jsonl",
        "--online", "redis", "--redis-url", "127.0.0.1:1", "--project", "tl_mon_gone",
        "--data-dir", tmp_path / "feast",
    )  # fmt: skip
    assert_user_error(ran, 2, "redis 127.0.0.1:1", "cannot measure")


def test_an_unreachable_store_and_host_are_listed_not_measured(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    record(ledger, "batch encode", SUCCESS, NOW - HOUR)
    store = open_store(online="redis", redis_url="127.0.0.1:1", project="tl_mon_x", data_dir=tmp_path / "feast")  # fmt: skip
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    snapshot = collect(Sources(ledger=ledger, store=store, serving_hosts=(host,), timeout_s=1), clock=lambda: NOW)  # fmt: skip
    assert snapshot.unreachable == ("redis 127.0.0.1:1", f"serving {host}")
    assert not [m for m in snapshot.measures if m.measure.startswith("row_age")]
    [up] = [m for m in snapshot.measures if m.measure == HOST_UP]
    assert up.value == 0 and up.host == host
    [skew] = [m for m in snapshot.measures if m.measure == VERSION_SKEW]
    assert skew.value is None  # no host answered: no skew, never 0
    assert any("127.0.0.1:1" in n for n in snapshot.notes)
