"""`towerline serve`: the online layer over HTTP (FastAPI on uvicorn)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from towerline.cli import options as o

ENV_SERVE_ARGS = "TOWERLINE_SERVE_ARGS"  # how `--workers N` hands the settings to each worker


def serve_cmd(
    indexes: o.Indexes,
    registry: o.Registry,
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; each holds the index in memory.")
    ] = 1,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="How long a request waits for others to share its micro-batch (0: no wait).",
        ),
    ] = 2.0,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests per micro-batch at most.")] = 64,
    poll_s: Annotated[
        float, typer.Option(min=0.05, help="How often serving.json is checked for a publish.")
    ] = 1.0,
    keep_towers: Annotated[
        int, typer.Option(min=1, help="Online towers of this many versions kept loaded.")
    ] = 3,
    access_log: Annotated[bool, typer.Option(help="Log every request (costs latency).")] = False,
) -> None:
    """Serve what INDEXES/<model-name>/serving.json names: POST /v1/retrieve,
    /v1/user-embedding, /v1/features; GET /healthz, /readyz, /metrics; OpenAPI at /docs.

    A new publish (or `towerline rollback`) is picked up within --poll-s and swapped in
    once it verifies; a broken one is refused and the old version keeps serving."""
    import uvicorn

    args = {
        "indexes": str(indexes),
        "registry": str(registry),
        "model_name": model_name,
        "repo": str(repo),
        "online": online,
        "redis_url": redis_url,
        "data_dir": str(data_dir) if data_dir else None,
        "project": project,
        "batch_window_ms": batch_window_ms,
        "max_batch": max_batch,
        "poll_s": poll_s,
        "keep_towers": keep_towers,
    }
    store = o.checked_store(repo, online, redis_url, data_dir, project)
    typer.echo(f"serving {model_name} from {indexes} on http://{host}:{port} (docs at /docs)")
    common = {"host": host, "port": port, "access_log": access_log, "log_level": "warning"}
    if workers == 1:
        uvicorn.run(_build(args, store), **common)
        return
    os.environ[ENV_SERVE_ARGS] = json.dumps(args)
    uvicorn.run("towerline.cli.serve:app_factory", factory=True, workers=workers, **common)


def app_factory() -> Any:
    """uvicorn's entry point in each worker process of `--workers N`."""
    args = json.loads(os.environ[ENV_SERVE_ARGS])
    store = o.feature_store(
        Path(args["repo"]),
        args["online"],
        args["redis_url"],
        Path(args["data_dir"]) if args["data_dir"] else None,
        args["project"],
    )
    return _build(args, store)


def _build(args: dict[str, Any], store: Any) -> Any:
    from serving.app import create_app
    from serving.config import ServeConfig

    cfg = ServeConfig(
        indexes=Path(args["indexes"]),
        registry=Path(args["registry"]),
        model_name=args["model_name"],
        batch_window_ms=args["batch_window_ms"],
        max_batch=args["max_batch"],
        poll_s=args["poll_s"],
        keep_towers=args["keep_towers"],
    )
    return create_app(cfg, store)
