"""SASRec (Kang & McAuley, ICDM 2018): the sequential baseline towerline is compared with.

Faithful to the authors' model: item embedding (scaled by sqrt(d)) + learned positional
embedding, pre-LayerNorm causal self-attention blocks whose query is the normalised input,
point-wise feed-forward with residual, padding positions zeroed after every block, a final
LayerNorm, and scores = hidden · item embedding (shared input/output table). Adam with
betas (0.9, 0.98). Two losses: ``bce`` (the paper: one sampled negative per position) and
``ce`` (full softmax over the catalogue, which later work found much stronger for SASRec);
``ce`` is the default: on ml-100k under bench/movielens.py it led at every matched epoch
(validation Recall@10 0.193 vs 0.160 at epoch 20, 0.204 vs 0.170 at epoch 30).
``mask_seen`` (default on, as towerline's trainer) leaves each target's earlier items out
of its softmax, the CE form of the paper's negatives "not in the user's items": the
protocol never ranks them (ml-100k, seed 0: test Recall@10 0.208 -> 0.222, NDCG@10
0.108 -> 0.122; README, "Retrieval quality").

Items are contiguous indices 1..num_items; 0 is padding. Sequences are left-padded so the
last column is the most recent item.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.batches import ragged
from model.config import HISTORY_CUTOFFS
from model.features import history_index
from model.lake_io import LakeData
from model.protocol import batched_ranking_metrics, leave_one_out_split, popularity_scores


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
    maxlen: int = 50  # the paper: 50 for ml-100k-sized data, 200 for ml-1m
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200  # a ceiling: early stopping on the validation metric ends sooner
    eval_every: int = 2
    patience: int = 5  # evaluations without improvement before stopping
    loss: str = "ce"  # "ce" (full softmax) or "bce" (one sampled negative, as the paper)
    windows: str = "all"  # "all": every maxlen chunk of a history; "last": the paper's one
    seed: int = 0
    threads: int = 1
    # "ce" only: leave the items of a target's earlier events (its whole history, not just
    # the window) out of its softmax, as evaluation's seen-filter never ranks them.
    mask_seen: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce") or self.windows not in ("all", "last"):
            raise ValueError(f"loss must be ce|bce and windows all|last, got {self}")


class _FeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class SASRec(nn.Module):
    def __init__(self, num_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.num_items, self.cfg = num_items, cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.maxlen, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.blocks)
        )
        self.ff_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.ffs = nn.ModuleList(_FeedForward(d, cfg.dropout) for _ in range(cfg.blocks))
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        causal = torch.triu(torch.ones(cfg.maxlen, cfg.maxlen, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        # The authors' PyTorch port: Xavier-normal on every matrix. With N(0, 1) embeddings the
        # sqrt(d)-scaled logits start in the hundreds and CE training crawls for many epochs.
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_normal_(param)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) item indices, 0 = pad, L <= maxlen -> hidden states (B, L, d)."""
        length = seq.shape[1]
        x = self.item_emb(seq) * self.cfg.hidden**0.5
        x = self.drop(x + self.pos_emb.weight[-length:])  # right-aligned positions
        keep = (seq != 0).unsqueeze(-1)
        x = x * keep
        mask = self.causal[:length, :length]
        for norm, attn, ff_norm, ff in zip(
            self.attn_norms, self.attns, self.ff_norms, self.ffs, strict=True
        ):
            q = norm(x)
            x = q + attn(q, x, x, attn_mask=mask, need_weights=False)[0]
            x = ff(ff_norm(x)) * keep
        return self.last_norm(x)

    def score_next(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) -> logits (B, num_items + 1) of the item after the last column."""
        return self.forward(seq)[:, -1, :] @ self.item_emb.weight.T


def pad_left(histories: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Histories of item indices -> (n, length) int64, the last ``length`` items of each."""
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, h in enumerate(histories):
        tail = h[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out


def training_windows(histories: Sequence[np.ndarray], maxlen: int, windows: str) -> np.ndarray:
    """(W, maxlen + 1) left-padded windows; input = [:, :-1], target = [:, 1:].

    "last" keeps the paper's single most recent window per user; "all" also cuts the older
    part of a long history into windows (overlapping by one item), so nothing is unused."""
    return windows_at(flatten(histories), window_spans(histories, maxlen, windows), maxlen)


def flatten(histories: Sequence[np.ndarray]) -> np.ndarray:
    """Every history, concatenated (int64)."""
    return np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)


def window_spans(histories: Sequence[np.ndarray], maxlen: int, windows: str) -> np.ndarray:
    """(W, 2) int64, one row per training window: where its user's history starts and
    where the window ends, as offsets into ``flatten(histories)``."""
    spans, offset = [], 0
    for h in histories:
        end = len(h)
        while end >= 2:
            spans.append((offset, offset + end))
            if windows == "last":
                break
            end -= maxlen
        offset += len(h)
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def windows_at(flat: np.ndarray, spans: np.ndarray, maxlen: int) -> np.ndarray:
    """The (W, maxlen + 1) windows of ``window_spans`` over ``flat``: the last
    maxlen + 1 items before each end, never reaching into the previous user's history."""
    return pad_left([flat[max(start, end - maxlen - 1) : end] for start, end in spans], maxlen + 1)


@dataclasses.dataclass(frozen=True)
class SeenItems:
    """Every user's history flattened, and where each training window lies in it."""

    flat: np.ndarray  # (E,) item indices of every history, concatenated
    spans: np.ndarray  # (W, 2) ``window_spans``

    def pairs(self, idx: np.ndarray, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, items) to leave out of the softmax of the non-pad targets of windows
        ``idx`` (B,) whose targets are ``targets`` (B, maxlen), rows numbered as
        ``targets[targets != 0]``: every earlier item of the user, the target's own kept."""
        w, j = np.nonzero(targets)
        user_start, end = self.spans[idx[w], 0], self.spans[idx[w], 1]
        position = end - targets.shape[1] + j  # flat index of the target
        rows, offsets = ragged(position - user_start)
        items = self.flat[user_start[rows] + offsets]
        keep = items != targets[w, j][rows]
        return torch.from_numpy(rows[keep]), torch.from_numpy(items[keep])


def _negatives(batch: torch.Tensor, num_items: int, gen: torch.Generator) -> torch.Tensor:
    """One random item per target position (B, maxlen), redrawn (3 times at most) while it
    is in the window: the paper samples negatives outside the user's items."""
    neg = torch.randint(1, num_items + 1, batch[:, 1:].shape, generator=gen)
    for _ in range(3):
        clash = (neg.unsqueeze(-1) == batch.unsqueeze(1)).any(-1)
        if not clash.any():
            break
        neg[clash] = torch.randint(1, num_items + 1, (int(clash.sum()),), generator=gen)
    return neg


def _loss(
    model: SASRec,
    batch: torch.Tensor,
    gen: torch.Generator,
    seen: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean next-item loss over the non-pad target positions of batch (B, maxlen + 1);
    ``seen`` ("ce"): (row, item) logits left out, rows as the non-pad targets."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    hidden = model(inputs)[targets != 0]  # (P, d)
    pos = targets[targets != 0]
    table = model.item_emb.weight
    if model.cfg.loss == "ce":
        logits = hidden @ table.T
        logits[:, 0] = float("-inf")  # padding is never a candidate
        if seen is not None:
            logits = logits.index_put(seen, logits.new_tensor(float("-inf")))
        return F.cross_entropy(logits, pos)
    neg = _negatives(batch, model.num_items, gen)[targets != 0]
    pos_logit = (hidden * table[pos]).sum(-1)
    neg_logit = (hidden * table[neg]).sum(-1)
    return F.binary_cross_entropy_with_logits(
        torch.cat([pos_logit, neg_logit]),
        torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]),
    )


@dataclasses.dataclass
class TrainResult:
    model: SASRec
    best_epoch: int
    best_metric: float
    history: list[tuple[int, float, float]]  # (epoch, mean loss, validation metric)
    seconds: float  # in training steps, validation excluded (as towerline's trainer)


def _train_epoch(
    model: SASRec,
    opt: torch.optim.Optimizer,
    data: torch.Tensor,
    gen: torch.Generator,
    seen_items: SeenItems | None = None,
) -> float:
    """One pass over the training windows (W, maxlen + 1) in random order; mean loss."""
    model.train()
    losses = []
    for idx in torch.randperm(len(data), generator=gen).split(model.cfg.batch_size):
        batch = data[idx]
        seen = None
        if seen_items is not None:
            seen = seen_items.pairs(idx.numpy(), batch[:, 1:].numpy())
        loss = _loss(model, batch, gen, seen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else 0.0


def _snapshot(model: SASRec) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_sasrec(
    histories: Sequence[np.ndarray],
    num_items: int,
    cfg: SASRecConfig,
    validate: Callable[[SASRec], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train on per-user training histories (item indices, oldest first).

    ``validate(model)`` returns the metric to maximise (the model is in eval mode); the best
    state is restored at the end. Without it every epoch up to ``cfg.epochs`` runs."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SASRec(num_items, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    flat, spans = flatten(histories), window_spans(histories, cfg.maxlen, cfg.windows)
    data = torch.from_numpy(windows_at(flat, spans, cfg.maxlen))
    seen_items = SeenItems(flat, spans) if cfg.mask_seen and cfg.loss == "ce" else None
    best_metric, best_epoch, best_state = -1.0, 0, _snapshot(model)
    history, stale, seconds = [], 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(model, opt, data, gen, seen_items)
        seconds += time.perf_counter() - started
        metric = float("nan")
        if validate is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            model.eval()
            with torch.inference_mode():
                metric = validate(model)
            stale = 0 if metric > best_metric else stale + 1
            if metric > best_metric:
                best_metric, best_epoch, best_state = metric, epoch, _snapshot(model)
        history.append((epoch, loss, metric))
        if log:
            log(f"sasrec epoch {epoch} loss {loss:.4f} val {metric:.4f}")
        if stale >= cfg.patience:
            break
    if validate is not None:
        model.load_state_dict(best_state)
    return TrainResult(model.eval(), best_epoch, best_metric, history, seconds)


@torch.inference_mode()
def score_histories(
    model: SASRec, histories: Sequence[np.ndarray], batch_size: int = 512
) -> np.ndarray:
    """Logits (n, num_items + 1) of the next item after each history; column 0 = padding."""
    model.eval()
    seq = torch.from_numpy(pad_left(histories, model.cfg.maxlen))
    out = [model.score_next(chunk) for chunk in seq.split(batch_size)]
    scores = torch.cat(out).numpy() if out else np.zeros((0, model.num_items + 1), np.float32)
    scores[:, 0] = -np.inf
    return scores


SELECT_ON = "recall@10"  # the validation metric towerline's trainer selects its epoch on


def run_leave_one_out(
    data: LakeData,
    cfg: SASRecConfig,
    log: Callable[[str], None] | None = None,
    history_cutoff: str = "event",
) -> dict[str, Any]:
    """Train on the leave-one-out training part of ``data.offsite``, stop early on the
    validation targets, and return the test metrics: the split, candidate set (the whole
    catalogue), exclusions (every earlier event of the user) and metrics of model/protocol.py,
    exactly as ``model.jobs.run_evaluate`` computes them for towerline.

    A query's input is the user's events before its target by ``history_cutoff``
    (``model.config.HISTORY_CUTOFFS``: "event" = strictly earlier in time, "log" = earlier
    in the log's (time, arrival) order, as the split orders them): pass towerline's, so
    both models see the same history (MovieLens ties many ratings to the same second)."""
    full = data.offsite
    split = leave_one_out_split(full.user, full.ts)
    cols, _ = data.catalog.index_of(full.pin)  # catalogue column of every event
    train = np.sort(split.train)
    _, first = np.unique(full.user[train], return_index=True)
    histories = np.split(cols[train] + 1, first[1:]) if len(train) else []
    starts, earlier = full.user_starts(), history_index(full, HISTORY_CUTOFFS[history_cutoff])

    def metrics(model: SASRec | None, targets: np.ndarray) -> dict[str, float]:
        """Full ranking of ``targets``; ``None`` ranks by training popularity instead."""
        exclude = [cols[s:k] for s, k in zip(starts[targets], targets, strict=True)]
        if model is None:
            pop = popularity_scores(cols[train], len(data.catalog))
            return batched_ranking_metrics(lambda r: pop.expand(len(r), -1), cols[targets], exclude)
        bounds = zip(starts[targets], earlier[targets], strict=True)
        scores = score_histories(model, [cols[s : e + 1] + 1 for s, e in bounds])
        scores = torch.from_numpy(scores[:, 1:])  # column 0 is padding
        return batched_ranking_metrics(lambda rows: scores[rows], cols[targets], exclude)

    valid, test = np.sort(split.valid), np.sort(split.test)
    result = train_sasrec(
        histories, len(data.catalog), cfg, lambda m: metrics(m, valid)[SELECT_ON], log
    )
    return {
        "test": metrics(result.model, test),
        "popularity": metrics(None, test),  # must equal towerline evaluate's: same protocol
        "users": len(test),
        "best_epoch": result.best_epoch,
        "validation": {SELECT_ON: result.best_metric},
        "epochs_run": len(result.history),
        # Stopped by patience before the epoch ceiling: the validation metric had peaked.
        "converged": len(result.history) < cfg.epochs,
        "train_seconds": round(result.seconds, 2),
    }
