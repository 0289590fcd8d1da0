"""`towerline serve` as a user starts it: a child process, several workers, OpenAPI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from serving.server import free_port
from tests.cli.cli_kit import ROOT
from tests.serving.conftest import World


def test_serve_with_two_workers_answers_and_documents_itself(served_world: World, tmp_path: Path) -> None:  # fmt: skip
    indexes = Path(shutil.copytree(served_world.indexes, tmp_path / "indexes"))
    port = free_port()
    args = ["serve", "--indexes", indexes, "--registry", served_world.registry, "--online", "sqlite"]  # fmt: skip
    args += ["--data-dir", served_world.feast_dir, "--project", served_world.project]
    args += ["--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "towerline.cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "towerline serve never became ready"
            time.sleep(0.2)
        for user in range(12):
            answer = requests.post(f"{url}/v1/retrieve", json={"user_id": user, "k": 5}, timeout=10)  # fmt: skip
            assert answer.status_code == 200 and answer.json()["model_version"] == "v1"
            assert answer.headers["x-towerline-pid"].isdigit()
        docs = requests.get(f"{url}/docs", timeout=5)
        schema = requests.get(f"{url}/openapi.json", timeout=5).json()
        assert docs.status_code == 200 and "/v1/retrieve" in schema["paths"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "Traceback" not in output, output
