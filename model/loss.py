"""Softmax losses: in-batch with logQ correction, mixed negatives, full catalogue.

The negatives of a positive are the other positives of the batch, so a pin shows up as
a negative in proportion to its popularity; subtracting log q(pin) from its logit
(Yi et al., RecSys 2019) makes the in-batch softmax an unbiased estimate of the full
softmax instead of one that mostly learns to push popular pins down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def in_batch_logits(
    user_emb: Tensor, item_emb: Tensor, pin_ids: Tensor, log_q: Tensor, temperature: float
) -> Tensor:
    """(T, D) users x (T, D) their positives -> (T, T) logits; row i's label is column i.

    Column j is corrected by ``-log_q[j]`` (T,). Accidental hits (column j holds the same
    pin as row i's positive, j != i) are masked to -inf: they are not negatives."""
    logits = user_emb @ item_emb.T / temperature - log_q.unsqueeze(0)
    hits = pin_ids.unsqueeze(0) == pin_ids.unsqueeze(1)
    hits.fill_diagonal_(False)
    return logits.masked_fill(hits, float("-inf"))


def in_batch_softmax_loss(
    user_emb: Tensor, item_emb: Tensor, pin_ids: Tensor, log_q: Tensor, temperature: float
) -> Tensor:
    """Mean cross-entropy of each user against the batch's positives (scalar)."""
    logits = in_batch_logits(user_emb, item_emb, pin_ids, log_q, temperature)
    return F.cross_entropy(logits, torch.arange(len(logits)))


def sampled_softmax_loss(
    user_emb: Tensor,
    item_emb: Tensor,
    pin_ids: Tensor,
    neg_emb: Tensor,
    neg_pin_ids: Tensor,
    log_expected: Tensor,
    temperature: float,
) -> Tensor:
    """Mixed negative sampling (Yang et al., WWW 2020): each user is scored against the
    batch's T positives and S extra negatives (S, D) drawn uniformly from the catalogue.

    ``log_expected`` (T + S,): log of each candidate column's expected count under the
    mixed proposal (T x its popularity + S / M); subtracting it is the logQ correction of
    the mixture, as ``in_batch_logits`` subtracts log q for the in-batch part alone. Uniform
    negatives reach the long tail that in-batch sampling almost never shows as negatives."""
    items = torch.cat([item_emb, neg_emb])
    pins = torch.cat([pin_ids, neg_pin_ids])
    logits = user_emb @ items.T / temperature - log_expected.unsqueeze(0)
    hits = pin_ids.unsqueeze(1) == pins.unsqueeze(0)
    rows = torch.arange(len(pin_ids))
    hits[rows, rows] = False
    return F.cross_entropy(logits.masked_fill(hits, float("-inf")), rows)


def full_softmax_loss(
    user_emb: Tensor,
    catalogue_emb: Tensor,
    columns: Tensor,
    temperature: float,
    seen: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Exact softmax over every catalogue item (M, D); ``columns`` (T,) = each positive's
    catalogue column. No sampling, so no correction: affordable when M is small.
    ``seen`` (rows, cols): logits left out of the softmax (never a row's own positive)."""
    logits = user_emb @ catalogue_emb.T / temperature
    if seen is not None:
        logits = logits.index_put(seen, logits.new_tensor(float("-inf")))
    return F.cross_entropy(logits, columns)
