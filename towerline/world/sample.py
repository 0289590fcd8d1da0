"""Vectorised sampling primitives shared by the world's generators (pure numpy)."""

from __future__ import annotations

import numpy as np

DAY_MS = 86_400_000

# Independent random streams: one per (stage, chunk), so a chunk's draws do not depend
# on how much randomness earlier stages consumed.
STREAM_CATALOG = 1
STREAM_EFFECTS = 2
STREAM_USERS = 3
STREAM_OFFSITE = 4
STREAM_ENGAGEMENTS = 5
STREAM_SESSIONS = 6


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A PCG64 generator for one stream of one world: ``SeedSequence(seed, spawn_key=key)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def categorical(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """``n`` i.i.d. draws from ``probs`` (shape (C,)), as int64 codes in [0, C)."""
    cdf = np.cumsum(probs, dtype=np.float64)
    codes = np.searchsorted(cdf / cdf[-1], rng.random(n), side="right")
    # Rounding can put a draw exactly on the last edge; it belongs to the last category.
    return np.minimum(codes, len(probs) - 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (any shape)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def gumbel_top(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    """Per row, ``k`` distinct columns drawn without replacement ∝ softmax(logits).

    ``logits`` (N, C) -> (N, k) int64, in draw order (the first is a plain softmax draw):
    the Gumbel-top-k trick, one matrix op instead of N sequential draws.
    """
    keys = logits + rng.gumbel(size=logits.shape)
    if k < keys.shape[1]:
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(keys.shape[1]), keys.shape).copy()
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def sorted_uniform_segments(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), sorted within each of the segments of sizes ``counts`` (S,).

    Returns (counts.sum(),) float64, segment-major. Uses normalised exponential spacings
    (the order statistics of c uniforms are the first c of c+1 normalised cumulative
    exponential gaps), so no sort is needed.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    gaps = np.cumsum(rng.standard_exponential(total + len(counts)))
    ends = np.cumsum(counts + 1) - 1  # index of each segment's closing gap
    base = np.concatenate(([0.0], gaps[ends[:-1]]))  # cumulative sum before each segment
    span = gaps[ends] - base
    keep = np.ones(len(gaps), dtype=bool)
    keep[ends] = False
    frac = (gaps[keep] - np.repeat(base, counts)) / np.repeat(span, counts)
    return np.minimum(frac, np.nextafter(1.0, 0.0))


def segment_starts(counts: np.ndarray) -> np.ndarray:
    """Start offset of each segment of sizes ``counts`` (S,) -> (S,) int64."""
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 (N,) -> (N,): a bijection, so distinct inputs
    give distinct outputs (unique image signatures by construction)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex16(values: np.ndarray) -> np.ndarray:
    """uint64 (N,) -> (N, 16) uint8 ASCII of the 16 lowercase hex digits, big-endian."""
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    nibbles = np.stack([raw >> 4, raw & 0x0F], axis=-1).reshape(-1, 16)
    return _HEX[nibbles]
