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


@pytest.mark.parametrize(
    ("train", "model"),
    [
        ({"negatives": "mixed", "uniform_negatives": 128}, {}),
        ({"negatives": "catalogue"}, {}),
        ({"weight_average": 0.99}, {"tie_pin_embeddings": True}),
    ],
    ids=["mixed-negatives", "full-softmax", "tied-and-averaged"],
)
def test_training_options_learn_and_survive_the_registry(tiny_lake, tmp_path, train, model):
    """Each loss / weight option trains (the loss falls, the metrics are real numbers; what
    each does to quality is measured by bench/quality.py, not on this tiny lake), and the
    registered parts, saved and loaded one by one, keep a tied table tied."""
    tcfg = TrainConfig(epochs=4, batch_targets=256, progress=False, patience=99, **train)
    summary = run_train(
        tiny_lake, tmp_path, holdout="leave-one-out", tcfg=tcfg, model_overrides=SMALL | model
    )
    losses = [row["loss"] for row in summary["history"]]
    assert losses[-1] < losses[0]
    result = run_evaluate(tiny_lake, tmp_path, summary["model_version"])
    assert 0 < result["with_context"]["recall@10"] <= result["with_context"]["recall@50"] <= 1
    if model.get("tie_pin_embeddings"):
        _, loaded = load_model(tmp_path)
        assert torch.equal(loaded.encoder.pin.table.weight, loaded.item_tower.pin.table.weight)


def test_weight_average_warms_up_then_lags_the_weights():
    from model.artifacts import TwoTower
    from model.config import ModelConfig
    from model.train import WeightAverage

    model = TwoTower.build(ModelConfig(pin_buckets=64, interest_vocab=8, **SMALL))
    average = WeightAverage(model, decay=0.99)
    first = model.parameters()[0]
    start = first.detach().clone()
    with torch.no_grad():
        first.add_(1.0)
    average.update()  # decay min(0.99, 2 / 11): mostly the new weights already
    assert torch.allclose(average.average[0], start + 1.0 - 2 / 11, atol=1e-6)
    for _ in range(2000):
        average.update()
    assert torch.allclose(average.average[0], first.detach(), atol=1e-5)
    with torch.no_grad():
        first.add_(1.0)
    average.update()  # warmed up: one step moves it by 1 - 0.99 only
    assert torch.allclose(average.average[0], first.detach() - 0.99, atol=1e-5)
