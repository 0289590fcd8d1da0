"""The batch half of `towerline demo`: train → encode → corpus → index → publish.

Each step is the same job function its CLI command calls, on the demo's small world.
"""

import datetime as dt
from pathlib import Path
from typing import Any

import feast


def train_encode_index(
    lake: Path, workdir: Path, day: dt.date, store: feast.FeatureStore, epochs: int = 2
) -> dict[str, Any]:
    """Run every batch step for ``day``; returns the summaries the demo prints."""
    from batch.corpus import run_corpus
    from batch.corpus_steps import CorpusConfig
    from batch.encode_job import EncodeConfig, run_encode
    from batch.index import run_index
    from batch.publish import publish
    from model.config import TrainConfig
    from model.jobs import run_train

    registry, indexes = workdir / "registry", workdir / "indexes"
    # No live bars: the demo prints one line per epoch from the history instead.
    tcfg = TrainConfig(epochs=epochs, progress=False)
    trained = run_train(lake, registry, until=day, tcfg=tcfg)
    version = trained["model_version"]
    encoded = run_encode(
        EncodeConfig(lake=lake, day=day, registry=registry, version=version, progress=False),
        store=store,
    )
    corpus = run_corpus(lake, CorpusConfig(day=day, half_life_days=7.0), out=workdir)
    index = run_index(
        workdir / "corpus" / corpus["snapshot_id"], registry, version, indexes, threads=2
    )
    serving = publish(version, registry, indexes, lake, store=store)
    return {
        "version": version,
        "train_seconds": trained["train_seconds"],
        "epochs": [
            {"epoch": row["epoch"], "loss": row["loss"], "seconds": row["seconds"]}
            for row in trained["history"]
        ],
        "encoded_users": encoded.get("rows", encoded.get("users")),
        "corpus": corpus,
        "index": index,
        "serving": serving,
    }


def second_version(
    lake: Path, workdir: Path, day: dt.date, store: feast.FeatureStore, epochs: int = 1
) -> str:
    """Train, encode and index another version over the same corpus, and publish it."""
    from batch.encode_job import EncodeConfig, run_encode
    from batch.index import run_index
    from batch.publish import publish
    from model.config import TrainConfig
    from model.jobs import run_train

    registry, indexes = workdir / "registry", workdir / "indexes"
    tcfg = TrainConfig(epochs=epochs, progress=False, seed=1)
    version = run_train(lake, registry, until=day, tcfg=tcfg)["model_version"]
    run_encode(
        EncodeConfig(lake=lake, day=day, registry=registry, version=version, progress=False),
        store=store,
    )
    run_index(workdir / "corpus", registry, version, indexes, threads=2)
    return publish(version, registry, indexes, lake, store=store)["model_version"]


def roll_back(lake: Path, workdir: Path, store: feast.FeatureStore) -> str:
    """`towerline rollback`: serve the previous version again."""
    from batch.publish import rollback

    return rollback(workdir / "registry", workdir / "indexes", lake, store)["model_version"]
