"""Frozen configs of the two-tower model and of its training run.

``ModelConfig`` fixes every tensor shape; it is saved as ``config.json`` in each model
version so any part can be rebuilt alone. Table sizes come from the data
(``ModelConfig.for_data``), never from per-dataset hand tuning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from towerline.core.contracts import AGE_BUCKETS, CONVERSION_ACTIONS, GENDERS

# -> resolution of "earlier" in seconds; 0 = the log's (time, arrival) order
HISTORY_CUTOFFS = {"log": 0, "event": 1, "day": 86_400}
PSEUDO_CONTEXTS = ("previous", "positive", "mixed")  # see model.batches.pseudo_context
NEGATIVES = ("auto", "in_batch", "mixed", "catalogue")  # see model.loss
SUBJECT_PINS = ("auto", "previous", "engagement")  # see model.batches.subject_events


def next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(int(n) - 1, 0).bit_length()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and regularisation of the three parts (encoder, online tower, item tower).

    ``pin_buckets`` rows back each hashed pin-id table (two hash functions per id, summed,
    so two pins rarely share both rows); ``interest_vocab`` = largest interest id + 3
    (row 0 = no interest, row 1 = unknown, id k -> row k + 2).
    """

    pin_buckets: int = 1 << 16
    interest_vocab: int = 1027
    dim: int = 64  # output embedding of both towers
    d_model: int = 64  # encoder width (= the cached hidden state)
    heads: int = 2
    layers: int = 2
    ff: int = 256
    max_len: int = 50  # L: events the encoder sees
    realtime_len: int = 10  # N: recent engaged pins fed to the context layer
    context_dim: int = 32  # width of each of the 3 context parts
    head_hidden: int = 128
    country_buckets: int = 64
    segment_buckets: int = 32
    num_actions: int = len(CONVERSION_ACTIONS) + 1  # 0 = unknown / padding
    num_ages: int = len(AGE_BUCKETS)
    num_genders: int = len(GENDERS)
    dropout: float = 0.1  # on the encoder's input and inside the MLPs
    # Inside the Transformer layers: off by default, its Bernoulli masks cost ~20% of a
    # training step on CPU; input, id and MLP dropout remain.
    encoder_dropout: float = 0.0
    id_dropout: float = 0.1  # whole pin-id embedding rows, training only
    context_dropout: float = 0.5  # whole subject-pin context vector, training only
    temperature: float = 0.05
    # What the cached history state of an example at time t has seen: "log" = every
    # offsite event before it in the log's (time, arrival) order, as the leave-one-out
    # split and the seen-pin exclusions order them; "event" = only those strictly earlier
    # in time (MovieLens stamps 44% of its validation/test targets in the same second as
    # an earlier rating, which "event" hides); "day" = every event before t's UTC day, as
    # served, where the daily encode job's state lags and only the context (subject pin,
    # real-time engagements) is fresh.
    history_cutoff: str = "log"
    # One pin-id table for the encoder's inputs and the item tower (needs d_model == dim):
    # what a pin means as history is then learnt from its every appearance as a target too.
    tie_pin_embeddings: bool = False
    # The subject pin of an example at t (training's pseudo-context and evaluation):
    # "engagement" = the user's newest on-platform engagement before t, the pin a user
    # looks at when the related-pins surface asks for candidates; "previous" = the user's
    # previous offsite conversion (for data without engagements, e.g. MovieLens);
    # "auto" = "engagement" when the lake has engagements, else "previous".
    subject_pin: str = "auto"
    # A linear path beside each tower's output MLP: the user embedding adds a projection of
    # the history state, the item embedding its id embedding (both before normalising).
    residual_heads: bool = False
    # The request's recency as context: the seconds from the newest event in the history
    # state to the request, in log2 buckets (``model.towers.gap_buckets``). It tells a
    # request in the same session as the last event from one days later, which the state
    # cannot know. Off by default: on ml-100k it raised test Recall@10 in every run but
    # not validation Recall@10, where defaults are chosen (README, "Retrieval quality").
    request_gap: bool = False

    def __post_init__(self) -> None:
        if self.history_cutoff not in HISTORY_CUTOFFS:
            raise ValueError(f"history_cutoff must be one of {sorted(HISTORY_CUTOFFS)}")
        if self.subject_pin not in SUBJECT_PINS:
            raise ValueError(f"subject_pin must be one of {SUBJECT_PINS}")
        if self.tie_pin_embeddings and self.d_model != self.dim:
            raise ValueError("tie_pin_embeddings needs d_model == dim")

    @classmethod
    def for_data(cls, num_pins: int, max_interest_id: int, **overrides: Any) -> ModelConfig:
        """Table sizes derived from the catalogue: 2x the pins rounded up to a power of two
        keeps the hashed tables about half empty."""
        sizes = {"pin_buckets": next_pow2(2 * num_pins), "interest_vocab": max_interest_id + 3}
        return cls(**{**sizes, **overrides})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        # Versions saved before the request gap existed have no table for it, whatever
        # the default is now.
        data = {"request_gap": False, **data}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run. ``epochs`` is a ceiling: with a validation split the best epoch
    by validation Recall@10 is kept and training stops after ``patience`` worse ones.
    The weights validated and kept are a moving average of the trained ones
    (``weight_average``), which makes that choice much less of a lucky draw.

    ``epochs`` and ``batch_targets`` left ``None`` adapt to the number of training
    examples ``n`` (``resolve``): the batch is the power of two <= n / 128, clamped to
    [256, 2048], and the epochs ~ ``example_budget / n``, clamped to [``min_epochs``,
    ``max_epochs``]. Small data (ml-100k, ~98k targets) so gets batch 512 and 40 epochs
    (many more optimizer steps per example); the 10k synthetic world (~480k) batch 2048
    and 8 epochs. Values given explicitly are kept as they are. The defaults were chosen
    on ml-100k's validation split (README, "Retrieval quality").
    """

    epochs: int | None = None  # None: round(example_budget / n) in [min_epochs, max_epochs]
    batch_targets: int | None = None  # positives per step (= in-batch negatives); None: auto
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    seed: int = 0
    # torch intra-op threads. One, deliberately: the batch of step i+1 is built on a
    # second thread (the other core) while step i runs, and on these shared 2-core
    # machines two OpenMP threads measured 5-10x slower under load (bench/train.py
    # --quick: ~10-12k examples/s with 1, ~1.2-1.9k with 2; spinning barriers).
    threads: int = 1
    patience: int = 8
    val_users: int = 2000  # users sampled for the per-epoch validation
    pseudo_context: str = "previous"  # see model.batches.pseudo_context
    # "in_batch": the batch's other positives, logQ-corrected; "mixed": plus
    # ``uniform_negatives`` uniform catalogue pins per batch (None: as many as the batch's
    # targets); "catalogue": an exact softmax over every pin; "auto": "catalogue" up to
    # ``full_softmax_max_pins`` pins, else "in_batch" (see README, "Retrieval quality").
    negatives: str = "auto"
    uniform_negatives: int | None = None
    # Leave the pins of a target's earlier events out of its softmax ("catalogue"):
    # evaluation and serving's seen-filter never rank them, so pushing them down only
    # pulls the user away from what it engaged with.
    mask_seen: bool = True
    full_softmax_max_pins: int = 4096
    # Decay of an exponential moving average of the weights, per step (0 = off): the
    # average is what validation sees and what is kept.
    weight_average: float = 0.995
    progress: bool = True
    example_budget: int = 4_000_000  # targets seen over all epochs when epochs is None
    min_epochs: int = 3
    max_epochs: int = 40
    min_batch: int = 256
    max_batch: int = 2048
    examples_per_batch_row: int = 128  # auto batch ~ n / this

    def __post_init__(self) -> None:
        if self.pseudo_context not in PSEUDO_CONTEXTS:
            raise ValueError(f"pseudo_context must be one of {PSEUDO_CONTEXTS}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {NEGATIVES}")
        if not 0.0 <= self.weight_average < 1.0:
            raise ValueError("weight_average must be in [0, 1)")
        if self.uniform_negatives is not None and self.uniform_negatives < 1:
            raise ValueError("uniform_negatives must be >= 1")
        if (self.epochs is not None and self.epochs < 1) or self.threads < 1:
            raise ValueError("epochs and threads must be >= 1")
        if self.batch_targets is not None and self.batch_targets < 2:
            raise ValueError("batch_targets must be >= 2")
        if not 1 <= self.min_epochs <= self.max_epochs or not 2 <= self.min_batch <= self.max_batch:
            raise ValueError("need 1 <= min_epochs <= max_epochs and 2 <= min_batch <= max_batch")

    def negatives_for(self, pins: int) -> str:
        """``negatives`` resolved for a catalogue of ``pins`` pins."""
        if self.negatives != "auto":
            return self.negatives
        return "catalogue" if pins <= self.full_softmax_max_pins else "in_batch"

    def resolve(self, n_examples: int, pins: int | None = None) -> TrainConfig:
        """This config with ``epochs`` and ``batch_targets`` fixed for ``n_examples``
        training targets, and ``negatives`` for a catalogue of ``pins`` (explicit values
        are kept)."""
        n = max(int(n_examples), 1)
        batch = self.batch_targets
        if batch is None:
            rows = max(n // self.examples_per_batch_row, 1)
            batch = min(max(1 << (rows.bit_length() - 1), self.min_batch), self.max_batch)
        epochs = self.epochs
        if epochs is None:
            epochs = min(max(round(self.example_budget / n), self.min_epochs), self.max_epochs)
        negatives = self.negatives if pins is None else self.negatives_for(pins)
        return dataclasses.replace(self, epochs=epochs, batch_targets=batch, negatives=negatives)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
