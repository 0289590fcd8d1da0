"""The three separately loadable parts of the two-tower model.

- ``SequenceEncoder`` (offline user tower): the daily job caches its last hidden state.
- ``OnlineTower`` = ``ContextLayer`` + ``UserHead`` (online user tower): request context
  + cached state -> user embedding.
- ``ItemTower``: pin -> item embedding, indexed by the ANN job.

All inputs are plain tensors with raw lake values (pin ids, interest ids with -1 padding
and -2 unknown, demographic codes from ``model.tables.encode_demographics``), so serving
feeds Feast's values without a vocabulary file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from towerline.core.contracts import PAD_INTEREST

_PRIME = 2_147_483_647  # 2^31 - 1: (id mod P) * a stays below 2^62, so no int64 overflow
_HASHES = ((1_103_515_245, 12_345), (48_271, 1_013_904_223))


def hash_buckets(ids: Tensor, buckets: int, which: int) -> Tensor:
    """Universal hash ((a * id + b) mod P) mod buckets of int64 ids, any shape."""
    a, b = _HASHES[which]
    return (ids.remainder(_PRIME) * a + b).remainder(_PRIME).remainder(buckets)


def interest_rows(raw: Tensor, vocab: int) -> Tensor:
    """Raw interest ids -> embedding rows: pad -> 0, unknown / out of range -> 1, k -> k+2."""
    rows = raw + 2
    unknown = ((raw < 0) & (raw != PAD_INTEREST)) | (rows >= vocab)
    return torch.where(raw == PAD_INTEREST, 0, torch.where(unknown, 1, rows))


GAP_BUCKETS = 33  # log2 buckets 0..31 of the request gap in seconds, 32 = no history state


def gap_buckets(seconds: Tensor) -> Tensor:
    """(B,) int64 seconds from the state's newest event to the request (-1: no state) ->
    bucket ``floor(log2(1 + s))``, capped at 31 (~68 years), and 32 for no state."""
    log2 = torch.floor(torch.log2(1.0 + seconds.clamp(min=0).to(torch.float64)))
    return torch.where(seconds < 0, GAP_BUCKETS - 1, log2.to(torch.int64).clamp(max=31))


def drop_rows(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole vectors (last dim) with probability ``p`` in training. No rescaling: a
    kept vector then looks exactly like at inference, and a dropped one like "absent"."""
    if not training or p <= 0.0:
        return x
    keep = torch.rand(x.shape[:-1], device=x.device) >= p
    return x * keep.unsqueeze(-1).to(x.dtype)


class HashedIdEmbedding(nn.Module):
    """Pin id -> sum of two rows of one hashed table: two pins rarely share both rows, so
    a table of ~2x the pins behaves like a full vocabulary, and unseen ids still map."""

    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.table = nn.Embedding(buckets, dim)
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (*S) int64 -> (*S, dim)."""
        return self.table(hash_buckets(ids, self.buckets, 0)) + self.table(
            hash_buckets(ids, self.buckets, 1)
        )


class InterestPool(nn.Module):
    """(*S, 3) interest ids + confidences -> (*S, dim): confidence-weighted sum."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.table = nn.Embedding(vocab, dim, padding_idx=0)
        nn.init.normal_(self.table.weight, std=0.05)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, interest_ids: Tensor, interest_conf: Tensor) -> Tensor:
        rows = interest_rows(interest_ids, self.vocab)
        return (self.table(rows) * interest_conf.unsqueeze(-1)).sum(dim=-2)


class SequenceEncoder(nn.Module):
    """Causal Transformer over a user's last L offsite events (oldest first, right-padded).

    Causal attention makes the hidden state at position i a function of events <= i only:
    training reads every position as the history of the next target in one pass, and the
    padding after the last event can never leak into it."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.pin = HashedIdEmbedding(cfg.pin_buckets, d)
        self.interests = InterestPool(cfg.interest_vocab, d)
        self.action = nn.Embedding(cfg.num_actions, d)
        self.gap = nn.Linear(1, d)
        self.position = nn.Embedding(cfg.max_len, d)
        self.norm_in = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            cfg.heads,
            cfg.ff,
            cfg.encoder_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(d)
        self.empty = nn.Parameter(torch.zeros(d))  # the state of a user with no history

    def sequence(
        self,
        pin_ids: Tensor,
        interest_ids: Tensor,
        interest_conf: Tensor,
        actions: Tensor,
        log_gaps: Tensor,
        lengths: Tensor | None = None,
    ) -> Tensor:
        """(B, W) ids, (B, W, 3) interests, (B, W) actions and gaps -> (B, W, d_model)."""
        width = pin_ids.shape[1]
        x = drop_rows(self.pin(pin_ids), self.cfg.id_dropout, self.training)
        x = x + self.interests(interest_ids, interest_conf) + self.action(actions)
        x = x + self.gap(log_gaps.unsqueeze(-1)) + self.position.weight[:width]
        x = self.drop(self.norm_in(x))
        mask = nn.Transformer.generate_square_subsequent_mask(width, dtype=x.dtype)
        return self.norm_out(self.layers(x, mask=mask, is_causal=True))

    def states_at(self, hidden: Tensor, rows: Tensor, positions: Tensor) -> Tensor:
        """hidden (B, W, d) -> (T, d) states at (rows, positions) (T,); position -1 (no
        history) gives the learned empty state."""
        picked = hidden[rows, positions.clamp(min=0)]
        return torch.where((positions >= 0).unsqueeze(-1), picked, self.empty)

    def forward(
        self,
        pin_ids: Tensor,
        interest_ids: Tensor,
        interest_conf: Tensor,
        actions: Tensor,
        log_gaps: Tensor,
        lengths: Tensor,
    ) -> Tensor:
        """The cached state: (B, d_model) hidden state after each row's last event
        (``lengths`` (B,) int64; 0 -> the empty state)."""
        hidden = self.sequence(pin_ids, interest_ids, interest_conf, actions, log_gaps)
        rows = torch.arange(pin_ids.shape[0])
        return self.states_at(hidden, rows, lengths - 1)


class ContextLayer(nn.Module):
    """Request context -> (B, 3 * context_dim): [subject pin | demographics + request gap |
    realtime].

    In training the whole context vector of an example is zeroed with probability
    ``context_dropout`` (the subject part is a pseudo-context then, see
    ``model.batches.pseudo_context``), so the head also learns to work from the history
    state alone; ``OnlineTower.without_context`` is that zero vector at inference."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.context_dim
        self.cfg = cfg
        self.subject = InterestPool(cfg.interest_vocab, c)
        self.age = nn.Embedding(cfg.num_ages, c)
        self.gender = nn.Embedding(cfg.num_genders, c)
        self.country = nn.Embedding(cfg.country_buckets, c)
        self.segment = nn.Embedding(cfg.segment_buckets, c)
        self.realtime = HashedIdEmbedding(cfg.pin_buckets, c)
        self.gap = nn.Embedding(GAP_BUCKETS, c) if cfg.request_gap else None
        for table in (self.age, self.gender, self.country, self.segment, self.gap):
            if table is not None:
                nn.init.normal_(table.weight, std=0.05)

    def forward(
        self,
        subject_interest_ids: Tensor,
        subject_interest_conf: Tensor,
        demographics: Tensor,
        realtime_pin_ids: Tensor,
        realtime_mask: Tensor,
        since_last_s: Tensor,
    ) -> Tensor:
        """(B, 3) int64 + (B, 3) float32 subject interests (pin_profile), (B, 4) int64
        demographics (user_profile codes), (B, N) int64 pins + (B, N) bool mask
        (user_realtime_seq), (B,) int64 seconds from the history state's newest event to
        the request (-1: no state; ignored by versions without ``request_gap``) ->
        (B, 3 * context_dim)."""
        subject = self.subject(subject_interest_ids, subject_interest_conf)
        demo = self.age(demographics[:, 0]) + self.gender(demographics[:, 1])
        demo = demo + self.country(demographics[:, 2]) + self.segment(demographics[:, 3])
        if self.gap is not None:
            demo = demo + self.gap(gap_buckets(since_last_s))
        recent = drop_rows(self.realtime(realtime_pin_ids), self.cfg.id_dropout, self.training)
        weight = realtime_mask.to(recent.dtype).unsqueeze(-1)
        pooled = (recent * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        context = torch.cat([subject, demo, pooled], dim=-1)
        return drop_rows(context, self.cfg.context_dropout, self.training)


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


class UserHead(nn.Module):
    """concat(hidden state (B, d_model), context (B, 3c)) -> MLP -> (B, dim), L2-normalised."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mlp = _mlp(cfg.d_model + 3 * cfg.context_dim, cfg.head_hidden, cfg.dim, cfg.dropout)
        self.skip = nn.Linear(cfg.d_model, cfg.dim, bias=False) if cfg.residual_heads else None

    def forward(self, hidden_state: Tensor, context: Tensor) -> Tensor:
        out = self.mlp(torch.cat([hidden_state, context], dim=-1))
        if self.skip is not None:
            out = out + self.skip(hidden_state)
        return F.normalize(out, dim=-1)


class OnlineTower(nn.Module):
    """The online part of the user tower: ``ContextLayer`` + ``UserHead``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.context = ContextLayer(cfg)
        self.head = UserHead(cfg)

    def forward(
        self,
        hidden_state: Tensor,
        subject_interest_ids: Tensor,
        subject_interest_conf: Tensor,
        demographics: Tensor,
        realtime_pin_ids: Tensor,
        realtime_mask: Tensor,
        since_last_s: Tensor,
    ) -> Tensor:
        """(B, d_model) cached state + ``ContextLayer`` inputs -> (B, dim) user embedding."""
        context = self.context(
            subject_interest_ids,
            subject_interest_conf,
            demographics,
            realtime_pin_ids,
            realtime_mask,
            since_last_s,
        )
        return self.head(hidden_state, context)

    def without_context(self, hidden_state: Tensor) -> Tensor:
        """(B, d_model) -> (B, dim) from the history state alone (a zero context vector,
        exactly what a dropped context looked like in training)."""
        zeros = hidden_state.new_zeros(hidden_state.shape[0], 3 * self.context.cfg.context_dim)
        return self.head(hidden_state, zeros)


class ItemTower(nn.Module):
    """pin id (hashed) + interests -> MLP -> (B, dim), L2-normalised."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pin = HashedIdEmbedding(cfg.pin_buckets, cfg.dim)
        self.interests = InterestPool(cfg.interest_vocab, cfg.dim)
        self.mlp = _mlp(2 * cfg.dim, cfg.head_hidden, cfg.dim, cfg.dropout)

    def forward(self, pin_ids: Tensor, interest_ids: Tensor, interest_conf: Tensor) -> Tensor:
        """(B,) int64 ids, (B, 3) interests -> (B, dim)."""
        pin = drop_rows(self.pin(pin_ids), self.cfg.id_dropout, self.training)
        out = self.mlp(torch.cat([pin, self.interests(interest_ids, interest_conf)], dim=-1))
        if self.cfg.residual_heads:
            out = out + pin
        return F.normalize(out, dim=-1)
