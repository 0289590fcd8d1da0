import math

import numpy as np
import pytest
import torch

from model.protocol import (
    MISS,
    batched_ranking_metrics,
    full_ranking_metrics,
    leave_one_out_split,
    popularity_scores,
    rank_stats,
)


def test_leave_one_out_holds_out_the_last_two_events_by_time():
    users = np.array([1, 2, 1, 1, 2, 1, 3])
    ts = np.array([40, 5, 10, 30, 6, 20, 1])
    split = leave_one_out_split(users, ts)
    assert split.users.tolist() == [1]  # user 2 has 2 events, user 3 one: train only
    assert split.test.tolist() == [0] and split.valid.tolist() == [3]
    assert sorted(split.train.tolist()) == [1, 2, 4, 5, 6]
    assert split.order.tolist() == [2, 5, 3, 0, 1, 4, 6]
    assert len(leave_one_out_split(users, ts, min_events=2).users) == 2


def test_metrics_of_a_hand_ranked_example():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]])
    targets = torch.tensor([2, 3])
    # row 0: item 0 is history -> the target is second; row 1: the target is first
    metrics = full_ranking_metrics(scores, targets, [np.array([0]), np.array([1])], ks=(1, 2))
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@2"] == pytest.approx(1.0)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert metrics["mrr@10"] == pytest.approx((0.5 + 1.0) / 2)


def test_a_target_already_in_the_history_is_a_miss_unless_asked_to_rank_it():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    repeat = [np.array([0, 2])]  # the target (2) was seen before: serving filters it
    assert full_ranking_metrics(scores, torch.tensor([2]), repeat, ks=(50,))["recall@50"] == 0.0
    ranked = full_ranking_metrics(scores, torch.tensor([2]), repeat, ks=(1,), seen_target="rank")
    assert ranked["recall@1"] == 0.0 and ranked["mrr@10"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seen_target"):
        full_ranking_metrics(scores, torch.tensor([2]), repeat, seen_target="x")


def test_ties_count_in_expectation():
    scores = torch.zeros(1, 10)
    metrics = full_ranking_metrics(scores, torch.tensor([4]), [np.array([1, 2])], ks=(2,))
    # 8 candidates tie: the target lands uniformly on ranks 0..7
    assert metrics["recall@2"] == pytest.approx(2 / 8)
    assert metrics["mrr@10"] == pytest.approx(sum(1 / r for r in range(1, 9)) / 8)


def test_padded_tensor_exclusion_equals_lists_and_duplicates_count_once():
    scores = torch.rand(3, 20, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 5, 19])
    lists = [np.array([1, 1, 2]), np.array([]), np.array([18, 3])]
    padded = torch.tensor([[1, 1, 2], [-1, -1, -1], [18, 3, -1]])
    assert (
        rank_stats(scores, targets, lists)[0].tolist()
        == rank_stats(scores, targets, padded)[0].tolist()
    )
    greater, _ = rank_stats(scores, targets, lists)
    expected = [(scores[0] > scores[0, 0]).sum() - (scores[0, 1:3] > scores[0, 0]).sum()]
    assert greater[0] == expected[0]


def test_batched_metrics_equal_one_big_batch():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(50, 30, generator=gen)
    targets = np.arange(50) % 30
    exclude = [np.array([(i + 1) % 30, (i + 2) % 30]) for i in range(50)]
    whole = full_ranking_metrics(scores, targets, exclude, ks=(5, 10))
    batched = batched_ranking_metrics(
        lambda rows: scores[rows], targets, exclude, (5, 10), batch_size=7
    )
    assert batched == pytest.approx(whole)


def test_popularity_scores_count_training_items():
    assert popularity_scores(np.array([0, 2, 2]), 4).tolist() == [1.0, 0.0, 2.0, 0.0]


def test_shared_scores_rank_like_the_expanded_matrix():
    counts = torch.tensor([5.0, 3.0, 3.0, 9.0, 0.0, 3.0])
    targets = torch.tensor([1, 4, 3, 2])
    exclude = [np.array([3]), np.array([0, 1]), np.array([]), np.array([2, 5])]
    shared = rank_stats(counts, targets, exclude)
    expanded = rank_stats(counts.expand(4, -1), targets, exclude)
    assert [t.tolist() for t in shared] == [t.tolist() for t in expanded]
    assert shared[0].tolist() == [1, 3, 0, MISS]  # the last target (2) was seen: a miss
