"""The batch half of `towerline demo`: train → encode → corpus → index → publish.

Each step is the same job function its CLI command calls, on the demo's small world, and
records its run in ``WORKDIR/ledger.jsonl`` as the command does in its ledger.
"""

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feast

from towerline.core import ledger
from towerline.core.contracts import DEFAULT_MODEL_NAME
from towerline.demo.workdir import LEDGER_NAME


def recorded(
    workdir: Path, job: str, call: Callable[[], Any], output: object = None, **run: Any
) -> Any:
    """``call()`` as one run of ``job`` in the demo's ledger (``run``: ``ledger.Run``'s
    keywords; ``output`` where the result does not name it, as for publish)."""
    if output is None and job in ("publish", "rollback"):
        output = _serving_path(workdir)
    more = {} if output is None else {"output": output}
    with ledger.Run(workdir / LEDGER_NAME, job, **run) as done:
        result = call()
        done.succeeded(**ledger.facts(job, result, **more))
    return result


def _serving_path(workdir: Path) -> Path:
    from towerline.core.ann import SERVING, model_root

    return model_root(workdir / "indexes", DEFAULT_MODEL_NAME) / SERVING


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
    # The retrain cycle judges versions on ``day``: this one must not have trained on it.
    trained = run_train(lake, registry, until=_day_before(lake, day), tcfg=tcfg)
    version = trained["model_version"]
    model = {"model_name": DEFAULT_MODEL_NAME, "model_version": version}
    encoded = recorded(
        workdir,
        "batch encode",
        lambda: run_encode(
            EncodeConfig(lake=lake, day=day, registry=registry, version=version, progress=False),
            store=store,
        ),
        partition=day,
        **model,
    )
    corpus = recorded(
        workdir,
        "batch corpus",
        lambda: run_corpus(lake, CorpusConfig(day=day, half_life_days=7.0), out=workdir),
        partition=day,
    )
    snapshot = workdir / "corpus" / corpus["snapshot_id"]
    index = recorded(
        workdir,
        "batch index",
        lambda: run_index(snapshot, registry, version, indexes, threads=2),
        **model,
    )
    serving = recorded(
        workdir, "publish", lambda: publish(version, registry, indexes, lake, store=store), **model
    )
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
    model = {"model_name": DEFAULT_MODEL_NAME, "model_version": version}
    recorded(
        workdir,
        "batch encode",
        lambda: run_encode(
            EncodeConfig(lake=lake, day=day, registry=registry, version=version, progress=False),
            store=store,
        ),
        partition=day,
        **model,
    )
    recorded(
        workdir,
        "batch index",
        lambda: run_index(workdir / "corpus", registry, version, indexes, threads=2),
        **model,
    )
    doc = recorded(
        workdir, "publish", lambda: publish(version, registry, indexes, lake, store=store), **model
    )
    return doc["model_version"]


def _day_before(lake: Path, day: dt.date) -> dt.date:
    """The newest offsite partition before ``day`` (``day`` itself when there is none)."""
    from schemas.lake import partitions

    earlier = [d for d in partitions(lake, "offsite_conversions") if d < day]
    return earlier[-1] if earlier else day


def retrain_cycle(
    lake: Path, workdir: Path, day: dt.date, store: feast.FeatureStore
) -> dict[str, Any]:
    """`towerline retrain --until day`: train the next version on the days before ``day``,
    gate it against the live one on ``day``'s held-out events, roll it out or reject it.
    Returns the gate report, its table and the version served before and after."""
    import io

    from batch.daily import DailyConfig, retrain_now
    from batch.gate import gate_table
    from batch.retrain import RetrainOptions

    cfg = DailyConfig(
        day=day,
        lake=lake,
        registry=workdir / "registry",
        indexes=workdir / "indexes",
        ledger=workdir / LEDGER_NAME,
        corpus_out=workdir,
        threads=2,
        progress=False,
        retrain=RetrainOptions(seed=1),  # v1's recipe, another initialisation
    )
    steps = io.StringIO()  # the chain's step lines; the demo prints the gate table instead
    report = retrain_now(cfg, store, log=steps)
    return {
        **report,
        "table": gate_table(report),
        "served_before": report["live"]["version"],
        "served_after": report["served"],
    }


def roll_back(lake: Path, workdir: Path, store: feast.FeatureStore) -> str:
    """`towerline rollback`: serve the previous version again."""
    from batch.publish import rollback

    doc = recorded(
        workdir,
        "rollback",
        lambda: rollback(workdir / "registry", workdir / "indexes", lake, store),
        model_name=DEFAULT_MODEL_NAME,
    )
    return doc["model_version"]
