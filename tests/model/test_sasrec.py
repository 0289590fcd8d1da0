"""SASRec baseline: tiny models on planted sequences, in seconds."""

from pathlib import Path

import numpy as np
import pytest
import torch

from model.baselines.sasrec import (
    SASRec,
    SASRecConfig,
    SeenItems,
    pad_left,
    run_leave_one_out,
    score_histories,
    train_sasrec,
    training_windows,
    window_spans,
)
from model.lake_io import load_lake
from towerline.importers.movielens import import_movielens

FIXTURES = Path(__file__).parents[1] / "fixtures" / "movielens"
TINY = {"maxlen": 8, "hidden": 16, "batch_size": 64, "dropout": 0.0, "lr": 1e-2}


def _cycles(users: int, items: int, length: int, seed: int = 0) -> list[np.ndarray]:
    """Histories that walk 1, 2, …, items, 1, … from a random start: next item = this + 1."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, items) + np.arange(length)) % items + 1 for _ in range(users)]


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_loss_goes_down_and_the_next_item_is_learned(loss: str) -> None:
    cfg = SASRecConfig(**TINY, epochs=12, loss=loss)
    result = train_sasrec(_cycles(48, 12, 17), num_items=12, cfg=cfg)
    losses = [row[1] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    scores = score_histories(result.model, [np.array([3, 4, 5]), np.array([11, 12])])
    assert scores.shape == (2, 13) and np.isneginf(scores[:, 0]).all()
    assert scores[:, 1:].argmax(1).tolist() == [5, 0]  # items 6 and 1 (column = item - 1)


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(**TINY)).eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    b = a.clone()
    b[0, -1] = 20
    with torch.inference_mode():
        ha, hb = model(a), model(b)
    assert torch.allclose(ha[0, :-1], hb[0, :-1], atol=1e-6)
    assert not torch.allclose(ha[0, -1], hb[0, -1])


def test_windows_and_padding() -> None:
    history = np.arange(1, 13)  # 12 items
    assert pad_left([np.array([4, 5])], 4).tolist() == [[0, 0, 4, 5]]
    last = training_windows([history], maxlen=5, windows="last")
    assert last.tolist() == [[7, 8, 9, 10, 11, 12]]
    every = training_windows([history, np.array([9])], maxlen=5, windows="all")
    # Windows of maxlen + 1 overlap by one item so every item is a target exactly once.
    assert every.tolist() == [[7, 8, 9, 10, 11, 12], [2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 1, 2]]


def test_early_stopping_keeps_the_best_epoch() -> None:
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.1, 0.0])
    cfg = SASRecConfig(**TINY, epochs=10, eval_every=1, patience=3)
    result = train_sasrec(_cycles(8, 6, 10), 6, cfg, validate=lambda m: next(scores))
    assert (result.best_epoch, result.best_metric, len(result.history)) == (2, 0.5, 5)


def test_leave_one_out_on_an_imported_lake(tmp_path: Path) -> None:
    import_movielens(FIXTURES / "ml-100k", tmp_path)
    cfg = SASRecConfig(**TINY, epochs=2, eval_every=1)
    out = run_leave_one_out(load_lake(tmp_path), cfg)
    assert out["users"] == 1  # only user 1 has the 3 events leave-one-out needs
    assert set(out["test"]) == {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr@10"}
    # 4 pins, user 1's 3 earlier pins excluded: the target is the only candidate left.
    assert out["test"]["recall@10"] == out["popularity"]["mrr@10"] == 1.0


def test_seen_items_of_a_window_target_reach_back_past_the_window() -> None:
    """``mask_seen``: a target's left-out items are the user's whole earlier history, also
    the part before its window, never the target itself."""
    histories = [np.array([3, 4, 5, 6, 7, 8, 9]), np.array([10, 11])]
    windows = training_windows(histories, maxlen=3, windows="all")
    seen = SeenItems(np.concatenate(histories), window_spans(histories, 3, "all"))
    targets = windows[:, 1:]
    rows, items = seen.pairs(np.arange(len(windows)), targets)
    got = {int(t): sorted(items[rows == r].tolist()) for r, t in enumerate(targets[targets != 0])}
    assert got == {
        4: [3], 5: [3, 4], 6: [3, 4, 5], 7: [3, 4, 5, 6], 8: [3, 4, 5, 6, 7],
        9: [3, 4, 5, 6, 7, 8], 10: [], 11: [10],
    }  # fmt: skip


def test_masking_seen_items_still_learns_the_planted_order() -> None:
    cfg = SASRecConfig(**TINY, epochs=30, mask_seen=True)
    model = train_sasrec(_cycles(64, 6, 9), 6, cfg).model
    scores = score_histories(model, [np.array([1, 2, 3]), np.array([4, 5])])
    assert scores[:, 1:].argmax(1).tolist() == [3, 5]  # next items 4 and 6 (0-based 3, 5)
