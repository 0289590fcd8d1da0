import numpy as np
import torch
import torch.nn.functional as F

from model.batches import log_sampling_prob
from model.loss import in_batch_logits, in_batch_softmax_loss


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
