"""`towerline batch corpus | batch index`, `towerline index rollback`, `towerline publish`.

Register in towerline/cli.py::

    batch_app.command("corpus")(batch_corpus_cmd)
    batch_app.command("index")(batch_index_cmd)
    index_app.command("rollback")(index_rollback_cmd)
    app.command("publish")(publish_cmd)

Beam pipeline options go after ``--`` (``towerline batch corpus ... -- --runner=FlinkRunner``).
Heavy imports (Beam, torch, Feast) happen inside the commands so ``--help`` stays fast.
Each command prints one JSON object last; a refused step exits 1 with the reason on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_MODEL_NAME = "two_tower"  # = model.artifacts.DEFAULT_MODEL_NAME (not imported: torch)
DEFAULT_WEIGHTS = "CLOSEUP=1,CLICK=2,SAVE=4,SHARE=4"

PipelineArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Beam pipeline options, after `--`: e.g. -- --runner=DirectRunner "
        "--direct_num_workers=2 --direct_running_mode=multi_processing.",
        show_default=False,
    ),
]
ModelName = Annotated[str, typer.Option(help="Model name: indexes live in INDEXES/<model-name>/.")]
Indexes = Annotated[Path, typer.Option(help="The index store (INDEXES).")]


def _run(step: Callable[[], dict[str, Any]]) -> None:
    """Run ``step``; print its result as JSON, or its refusal on stderr and exit 1."""
    from batch.corpus_steps import CorpusError
    from batch.index import IndexJobError
    from batch.publish import PublishError
    from model.registry import RegistryError
    from schemas.lake import LakeError
    from towerline.ann import AnnError

    try:
        result = step()
    except (CorpusError, IndexJobError, PublishError, RegistryError, LakeError, AnnError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(result))


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``"CLICK=2,SAVE=4"`` -> the default weights with those replaced."""
    weights = {a: float(w) for a, w in (p.split("=") for p in DEFAULT_WEIGHTS.split(","))}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        action, _, value = pair.partition("=")
        try:
            weights[action.strip().upper()] = float(value)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{pair!r} is not ACTION=WEIGHT", param_hint="--weights"
            ) from exc
    return tuple(weights.items())


def batch_corpus_cmd(
    lake: Annotated[Path, typer.Option(help="The Parquet lake (engagements/, pins/).")],
    date: Annotated[
        str,
        typer.Option("--dt", help="Snapshot day YYYY-MM-DD; decay is measured to its end (UTC)."),
    ],
    half_life_days: Annotated[
        float, typer.Option(min=0.001, help="Days after which an engagement counts half.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Write OUT/corpus/<snapshot_id>/; default the lake.")
    ] = None,
    top_m: Annotated[int, typer.Option(min=1, help="Pins kept in the snapshot (M).")] = 1_000_000,
    window_days: Annotated[int, typer.Option(min=1, help="Days of engagements read.")] = 90,
    weights: Annotated[
        str, typer.Option(help="Weight per action, ACTION=W,... (unlisted keep the default).")
    ] = DEFAULT_WEIGHTS,
    shards: Annotated[int, typer.Option(min=1, help="Key shards of the aggregation.")] = 16,
    pipeline_args: PipelineArgs = None,
) -> None:
    """Serving corpus: time-decayed engagement per pin over the window, pins sharing an
    image signature collapsed onto the most engaged one, top M written as a snapshot
    (corpus.parquet, signature_map.parquet, manifest.json) and `latest` flipped to it."""
    from batch.corpus import CorpusConfig, run_corpus
    from schemas.lake import LakeError, parse_dt

    try:
        day = parse_dt(date)
    except LakeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dt") from exc
    pairs = parse_weights(weights)
    _run(
        lambda: run_corpus(
            lake,
            CorpusConfig(day, half_life_days, pairs, window_days, top_m, shards),
            out,
            pipeline_args,
        )
    )


def batch_index_cmd(
    corpus: Annotated[
        Path,
        typer.Option(help="Corpus snapshot dir, or OUT/corpus (or OUT) to take its `latest`."),
    ],
    registry: Annotated[Path, typer.Option(help="The model registry.")],
    out: Annotated[Path, typer.Option(help="The index store (INDEXES) to publish into.")],
    version: Annotated[str, typer.Option(help="Model version, e.g. v3, or latest.")] = "latest",
    m: Annotated[int, typer.Option("--m", min=2, help="HNSW graph degree M.")] = 16,
    ef_construction: Annotated[int, typer.Option(min=1, help="HNSW build beam.")] = 200,
    ef_search: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Default query beam saved with the index; default: calibrated at build, the "
            "smallest of 100..800 reaching recall@100 0.95 on sampled corpus items.",
        ),
    ] = None,
    keep: Annotated[int, typer.Option(min=1, help="Builds kept per model; older are deleted.")] = 3,
    threads: Annotated[int, typer.Option(help="hnswlib build threads; -1 = all cores.")] = -1,
    model_name: ModelName = DEFAULT_MODEL_NAME,
    pipeline_args: PipelineArgs = None,
) -> None:
    """Embed the corpus with the item tower of VERSION, build an inner-product HNSW index,
    publish it atomically under OUT/<model-name>/<version>-<built_at>/ and flip `current`."""
    from batch.index import run_index
    from towerline.ann import HnswParams

    params = HnswParams(M=m, ef_construction=ef_construction, ef_search=ef_search or 100)
    _run(
        lambda: run_index(
            corpus,
            registry,
            version,
            out,
            params,
            calibrate=ef_search is None,
            model_name=model_name,
            keep=keep,
            threads=threads,
            pipeline_args=pipeline_args,
        )
    )


def index_rollback_cmd(indexes: Indexes, model_name: ModelName = DEFAULT_MODEL_NAME) -> None:
    """Flip `current` back to the newest intact build older than the current one."""
    from towerline.ann import rollback

    _run(lambda: rollback(indexes, model_name, dt.datetime.now(dt.UTC)))


def publish_cmd(
    version: Annotated[str, typer.Option(help="Model version to serve, e.g. v3.")],
    registry: Annotated[Path, typer.Option(help="The model registry.")],
    indexes: Indexes,
    lake: Annotated[Path, typer.Option(help="The lake holding user_history_state/ partitions.")],
    online_check: Annotated[
        bool, typer.Option(help="Also read a sample of history states from the online store.")
    ] = True,
    online: Annotated[
        str | None, typer.Option(help="Online store: sqlite or redis (env TOWERLINE_ONLINE_STORE).")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(help="Redis host:port with --online redis.")
    ] = None,
    feast_data_dir: Annotated[
        Path | None, typer.Option(help="Feast registry / SQLite dir; default feature_repo/data.")
    ] = None,
    model_name: ModelName = DEFAULT_MODEL_NAME,
) -> None:
    """Make VERSION servable: refuse unless its index exists and verifies and its
    user_history_state rows exist (lake, and online with --online-check); then replace
    INDEXES/<model-name>/serving.json atomically."""
    from batch.publish import publish

    def step() -> dict[str, Any]:
        store = None
        if online_check:
            from towerline.featurestore import open_store

            store = open_store(online=online, redis_url=redis_url, data_dir=feast_data_dir)
        return publish(version, registry, indexes, lake, store, model_name)

    _run(step)
