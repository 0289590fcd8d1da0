"""Users: demographics, interest mixtures with drift, activity (pure numpy).

Demographics are drawn from fixed marginals; each demographic value shifts the
interest logits by a random effect, so demographics carry a weak signal about interests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from towerline.core.contracts import AGE_BUCKETS, GENDERS
from towerline.world.config import WorldConfig
from towerline.world.sample import categorical, gumbel_top

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA", "MX", "AU")
SEGMENTS: tuple[str, ...] = ("casual", "regular", "enthusiast", "creator", "business")

# Marginals, in the order of the symbol tuples above.
AGE_P = np.array([0.08, 0.05, 0.22, 0.28, 0.18, 0.11, 0.08])
GENDER_P = np.array([0.06, 0.58, 0.33, 0.03])
COUNTRY_P = np.array([0.40, 0.08, 0.07, 0.06, 0.09, 0.08, 0.05, 0.06, 0.06, 0.05])
SEGMENT_P = np.array([0.45, 0.30, 0.15, 0.06, 0.04])

DEMOGRAPHICS: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
    "age_bucket": (AGE_BUCKETS, AGE_P),
    "gender": (GENDERS, GENDER_P),
    "country": (COUNTRIES, COUNTRY_P),
    "segment": (SEGMENTS, SEGMENT_P),
}


def sample_effects(rng: np.random.Generator, cfg: WorldConfig) -> dict[str, np.ndarray]:
    """Per demographic field, (num symbols, K) float64 shifts of the interest logits."""
    return {
        name: rng.normal(0.0, cfg.demographic_signal, (len(symbols), cfg.interests))
        for name, (symbols, _) in DEMOGRAPHICS.items()
    }


@dataclasses.dataclass(frozen=True)
class Population:
    """One chunk of n users; S = min(max_user_interests, interests) mixture slots.

    The mixture of a user on day index d is ``softmax(log_weights + d * drift)`` over the
    slots (padded slots have log weight -inf).
    """

    user_ids: np.ndarray  # (n,) int64
    demographics: dict[str, np.ndarray]  # field -> (n,) int64 codes into DEMOGRAPHICS
    interest_ids: np.ndarray  # (n, S) int32, -1 padded; slot 0 has the largest weight
    log_weights: np.ndarray  # (n, S) float64 day-0 log mixture weights, -inf padded
    drift: np.ndarray  # (n, S) float64 per-day slope of the log weights, 0 padded
    activity: np.ndarray  # (n,) float64 activity multiplier, mean 1

    @property
    def num_interests(self) -> np.ndarray:
        """(n,) int64 mixture size of each user."""
        return (self.interest_ids >= 0).sum(axis=1)


def sample_population(
    rng: np.random.Generator,
    cfg: WorldConfig,
    user_ids: np.ndarray,
    prior: np.ndarray,
    effects: dict[str, np.ndarray],
) -> Population:
    """Users ``user_ids`` (n,); ``prior`` (K,) global interest probabilities."""
    n = len(user_ids)
    demo = {name: categorical(rng, p, n) for name, (_, p) in DEMOGRAPHICS.items()}
    logits = np.log(prior) + sum(effects[name][codes] for name, codes in demo.items())
    slots = min(cfg.max_user_interests, cfg.interests)
    chosen = gumbel_top(rng, logits, slots).astype(np.int32)
    count = 1 + rng.binomial(slots - 1, 0.45, n)
    absent = np.arange(slots) >= count[:, None]
    # Dirichlet(alpha) over the present slots, via normalised gammas; floor keeps logs finite.
    gam = np.where(absent, 0.0, np.maximum(rng.gamma(cfg.dirichlet_alpha, size=(n, slots)), 1e-6))
    weights = gam / gam.sum(axis=1, keepdims=True)
    order = np.argsort(-weights, axis=1, kind="stable")
    weights = np.take_along_axis(weights, order, axis=1)
    ids = np.take_along_axis(np.where(absent, -1, chosen), order, axis=1)
    with np.errstate(divide="ignore"):
        log_weights = np.log(weights)  # exact -inf on padded slots
    drift = np.where(ids >= 0, rng.normal(0.0, cfg.drift, (n, slots)), 0.0)
    shape = cfg.activity_shape
    activity = rng.gamma(shape, 1.0 / shape, n)
    return Population(user_ids, demo, ids, log_weights, drift, activity)


def mixture_slots(
    rng: np.random.Generator, pop: Population, user: np.ndarray, day: np.ndarray
) -> np.ndarray:
    """One mixture draw per event: users ``user`` (N,) local indices on days ``day`` (N,)
    -> (N,) int32 interest ids, from each user's drifted mixture of that day."""
    logits = pop.log_weights[user] + day[:, None] * pop.drift[user]
    cum = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    u = rng.random(len(user)) * cum[:, -1]
    slot = (u[:, None] >= cum).sum(axis=1)
    slot = np.minimum(slot, pop.num_interests[user] - 1)
    return pop.interest_ids[user, slot]
