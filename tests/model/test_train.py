import pytest
import torch

from model import registry as reg
from model.artifacts import load_model
from model.config import TrainConfig
from model.jobs import run_evaluate, run_train

SMALL = {"dim": 32, "d_model": 32, "ff": 64, "layers": 1, "max_len": 20, "head_hidden": 64}


def _train(lake, registry, epochs=6, seed=0, holdout="leave-one-out"):
    tcfg = TrainConfig(epochs=epochs, batch_targets=256, seed=seed, progress=False, patience=99)
    return run_train(lake, registry, holdout=holdout, tcfg=tcfg, model_overrides=SMALL)


@pytest.fixture(scope="module")
def trained(tiny_lake, tmp_path_factory):
    registry = tmp_path_factory.mktemp("registry")
    return registry, _train(tiny_lake, registry)


def test_training_lowers_the_loss_and_beats_popularity(tiny_lake, trained):
    registry, summary = trained
    losses = [row["loss"] for row in summary["history"]]
    assert losses[-1] < 0.85 * losses[0]
    assert summary["holdout"] == "leave-one-out"
    assert summary["train_events"] == summary["events"] - 2 * 300  # 2 held out per user
    result = run_evaluate(tiny_lake, registry, summary["model_version"])
    assert set(result) >= {"with_context", "no_context", "popularity", "users", "pins"}
    assert result["users"] == 300 and result["pins"] == 400
    for context in ("with_context", "no_context"):
        assert result[context]["recall@10"] > result["popularity"]["recall@10"]
        assert result[context]["ndcg@10"] > result["popularity"]["ndcg@10"]


def test_registered_version_records_window_and_metrics(trained):
    registry, summary = trained
    version = summary["model_version"]
    window = reg.load_document(registry, "two_tower", version, "window")
    assert window["holdout"] == "leave-one-out" and window["end"] == "2025-06-30"
    metrics = reg.load_document(registry, "two_tower", version, "metrics")
    assert metrics["examples"] > 0 and "with_context" in metrics["validation"]


def test_training_is_deterministic_for_a_seed(tiny_lake, tmp_path):
    a = _train(tiny_lake, tmp_path / "a", epochs=1, seed=5, holdout="none")
    b = _train(tiny_lake, tmp_path / "b", epochs=1, seed=5, holdout="none")
    assert a["loss"] == b["loss"]
    _, model_a = load_model(tmp_path / "a")
    _, model_b = load_model(tmp_path / "b")
    for part in ("encoder", "online", "item_tower"):
        sa, sb = model_a.parts()[part].state_dict(), model_b.parts()[part].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part
