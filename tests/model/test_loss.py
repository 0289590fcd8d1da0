import numpy as np
import torch
import torch.nn.functional as F

from model.batches import log_sampling_prob
from model.loss import (
    full_softmax_loss,
    in_batch_logits,
    in_batch_softmax_loss,
    sampled_softmax_loss,
)


def test_logq_correction_lowers_popular_pins_by_their_log_probability():
    pins = np.array([7, 7, 7, 7, 3, 5, 9, 9])  # pin 7 is half the positives
    log_q = torch.from_numpy(log_sampling_prob(pins))
    assert torch.allclose(log_q[0], torch.log(torch.tensor(0.5)))
    users = F.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    items = F.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    distinct = torch.arange(8)  # no accidental hits, to compare every cell
    corrected = in_batch_logits(users, items, distinct, log_q, 0.1)
    raw = in_batch_logits(users, items, distinct, torch.zeros(8), 0.1)
    assert torch.allclose(corrected, raw - log_q.unsqueeze(0))
    # raw - corrected = log q: relative to a pin seen once (q = 1/8), the popular pin
    # (q = 1/2) is lowered by log 4
    shift = raw - corrected
    assert torch.allclose(shift[:, 0], torch.full((8,), float(np.log(0.5))))
    assert torch.allclose(shift[:, 4], torch.full((8,), float(np.log(1 / 8))))
    assert (shift[:, 0] > shift[:, 4]).all()


def test_accidental_hits_are_masked_but_the_positive_is_kept():
    pins = torch.tensor([1, 2, 1])
    logits = in_batch_logits(torch.eye(3), torch.eye(3), pins, torch.zeros(3), 1.0)
    assert torch.isinf(logits[0, 2]) and torch.isinf(logits[2, 0])
    assert torch.isfinite(logits.diagonal()).all()
    loss = in_batch_softmax_loss(torch.eye(3), torch.eye(3), pins, torch.zeros(3), 1.0)
    assert torch.isfinite(loss)


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_mixed_negatives_without_extra_candidates_is_the_in_batch_loss():
    """With S = 0 the mixture's expected count is T x popularity: log q plus a constant,
    which a softmax ignores."""
    users, items = _unit(6, 4, 0), _unit(6, 4, 1)
    pins = torch.tensor([4, 4, 1, 2, 3, 5])
    log_q = torch.log(torch.tensor([2, 2, 1, 1, 1, 1]) / 8.0)
    none = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    mixed = sampled_softmax_loss(users, items, pins, *none, log_q + np.log(6), 0.1)
    assert torch.allclose(mixed, in_batch_softmax_loss(users, items, pins, log_q, 0.1))


def test_uniform_negatives_add_columns_and_their_hits_are_masked():
    users, items, extra = _unit(3, 4, 2), _unit(3, 4, 3), _unit(2, 4, 4)
    pins, extra_pins = torch.tensor([1, 2, 3]), torch.tensor([2, 9])
    loss = sampled_softmax_loss(users, items, pins, extra, extra_pins, torch.zeros(5), 1.0)
    # by hand: row 1's positive (pin 2) is also extra column 3 -> masked for row 1 only
    logits = users @ torch.cat([items, extra]).T
    logits[1, 3] = float("-inf")
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(3)))
    # more (unmasked) negatives can only raise the loss of the same scores
    assert loss > in_batch_softmax_loss(users, items, pins, torch.zeros(3), 1.0)


def test_full_softmax_is_cross_entropy_over_the_catalogue():
    users, catalogue = _unit(4, 4, 5), _unit(7, 4, 6)
    columns = torch.tensor([0, 6, 3, 3])
    expected = F.cross_entropy(users @ catalogue.T / 0.5, columns)
    assert torch.allclose(full_softmax_loss(users, catalogue, columns, 0.5), expected)


def test_full_softmax_leaves_seen_pins_out_of_each_rows_denominator():
    users, catalogue = _unit(2, 4, 7), _unit(5, 4, 8)
    columns = torch.tensor([1, 4])
    seen = torch.tensor([0, 0, 1]), torch.tensor([0, 3, 2])  # row 0 saw 0 and 3, row 1 saw 2
    logits = users @ catalogue.T / 0.5
    by_hand = torch.stack(
        [
            F.cross_entropy(logits[0, [1, 2, 4]].unsqueeze(0), torch.tensor([0])),
            F.cross_entropy(logits[1, [0, 1, 3, 4]].unsqueeze(0), torch.tensor([3])),
        ]
    ).mean()
    masked = full_softmax_loss(users, catalogue, columns, 0.5, seen)
    assert torch.allclose(masked, by_hand)
    # fewer terms in each denominator: strictly lower than the unmasked loss
    assert masked < full_softmax_loss(users, catalogue, columns, 0.5)
