"""Two real `towerline serve` processes on different versions: the monitor scrapes each
one's /metrics and reports each host's version and a skew of 1."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from monitor_kit import serve_pointer

from monitoring.collect import Sources, collect
from monitoring.model import HOST_UP, HOST_VERSION, VERSION_SKEW
from serving.server import free_port
from tests.cli.cli_kit import ROOT, child_env
from tests.serving.conftest import World, served_world  # noqa: F401 - the session fixture
from towerline.core.ann import list_indexes


@contextlib.contextmanager
def serving(world: World, indexes: Path) -> Iterator[str]:
    """`towerline serve` over ``indexes`` as a child process; yields its host:port."""
    port = free_port()
    args = ["serve", "--indexes", indexes, "--registry", world.registry, "--online", "sqlite"]
    args += ["--data-dir", world.feast_dir, "--project", world.project, "--port", port]
    proc = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *map(str, args)],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def wait_ready(host: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"http://{host}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise AssertionError(f"{host} never became ready")


def test_two_hosts_on_different_versions_show_skew(served_world: World, tmp_path: Path) -> None:  # noqa: F811
    on_v1 = Path(shutil.copytree(served_world.indexes, tmp_path / "v1"))
    on_v2 = Path(shutil.copytree(served_world.indexes, tmp_path / "v2"))
    [v2_build] = [p for p, meta in list_indexes(on_v2, "two_tower") if meta["model_version"] == "v2"]  # fmt: skip
    serve_pointer(on_v2, v2_build, dt.datetime.now(dt.UTC))
    with serving(served_world, on_v1) as a, serving(served_world, on_v2) as b:
        wait_ready(a)
        wait_ready(b)
        snapshot = collect(Sources(serving_hosts=(a, b)))
    assert snapshot.unreachable == ()
    by = {(m.measure, m.host): m.value for m in snapshot.measures}
    assert by[(HOST_VERSION, a)] == 1 and by[(HOST_VERSION, b)] == 2
    assert by[(HOST_UP, a)] == 1 and by[(HOST_UP, b)] == 1
    assert by[(VERSION_SKEW, "")] == 1
    [skew] = [r for r in snapshot.slos if r.measure == VERSION_SKEW]
    assert skew.status == "breach"
