"""Online reads for a micro-batch of requests: one online-store read per view.

Feast 0.67 does not apply ``ttl`` on online reads, so rows come back with their event
time and the caller decides; missing rows read as ``None`` and become the cold-start inputs
training used (empty state, unknown demographics, padded subject interests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.config import ModelConfig
from model.tables import encode_demographics
from serving.online import OnlineReader
from towerline.core.contracts import (
    INTEREST_SLOTS,
    PAD_INTEREST,
    PIN_PROFILE,
    USER_HISTORY_STATE,
    USER_PROFILE,
    USER_REALTIME_SEQ,
    VIEW_FEATURES,
)

VIEWS = (USER_HISTORY_STATE, USER_PROFILE, USER_REALTIME_SEQ, PIN_PROFILE)


@dataclasses.dataclass(frozen=True)
class UserInputs:
    """Online-tower inputs of B users (missing rows already replaced by cold-start values)."""

    hidden: np.ndarray  # (B, d_model) float32; the empty state where has_state is False
    has_state: np.ndarray  # (B,) bool
    demographics: np.ndarray  # (B, 4) int64; 0 = unknown
    realtime_pins: np.ndarray  # (B, N) int64, oldest first, right-aligned
    realtime_mask: np.ndarray  # (B, N) bool
    seen: list[np.ndarray]  # per user: every pin of its real-time sequence


@dataclasses.dataclass(frozen=True)
class SubjectInputs:
    """Subject-pin interests of B requests; padded (confidence 0) where absent or unknown."""

    interest_ids: np.ndarray  # (B, S) int64
    interest_conf: np.ndarray  # (B, S) float32
    found: np.ndarray  # (B,) bool


def read_users(
    reader: OnlineReader,
    version: str,
    user_ids: Sequence[int],
    cfg: ModelConfig,
    empty_state: np.ndarray,
) -> UserInputs:
    """History state of ``version``, profile and real-time sequence of each user."""
    keys = [{"user_id": int(u), "model_version": version} for u in user_ids]
    users = [{"user_id": int(u)} for u in user_ids]
    history, profiles, realtime = reader.read_many(
        [
            (USER_HISTORY_STATE, keys, frozenset({"hidden"})),
            (USER_PROFILE, users, frozenset()),
            (USER_REALTIME_SEQ, users, frozenset({"pin_ids"})),
        ]
    )
    hidden, has_state = _states([r and r.get("hidden") for r in history], empty_state)
    pins, mask, seen = _realtime([r and r.get("pin_ids") for r in realtime], cfg.realtime_len)
    return UserInputs(hidden, has_state, _demographics(profiles, cfg), pins, mask, seen)


def read_subjects(reader: OnlineReader, pin_ids: Sequence[int | None]) -> SubjectInputs:
    """``pin_profile`` interests of each subject pin (``None`` = no subject pin)."""
    b = len(pin_ids)
    ids = np.full((b, INTEREST_SLOTS), PAD_INTEREST, np.int64)
    conf = np.zeros((b, INTEREST_SLOTS), np.float32)
    found = np.zeros(b, bool)
    asked = sorted({int(p) for p in pin_ids if p is not None})
    if not asked:
        return SubjectInputs(ids, conf, found)
    rows = reader.read(PIN_PROFILE, [{"pin_id": p} for p in asked])
    by_pin = dict(zip(asked, rows, strict=True))
    for i, pin in enumerate(pin_ids):
        row = by_pin.get(pin) if pin is not None else None
        interests = row.get("interest_ids") if row else None
        if not interests:
            continue
        confidences = row.get("interest_confidences")
        n = min(len(interests), INTEREST_SLOTS)
        ids[i, :n] = interests[:n]
        conf[i, :n] = (confidences or [0.0] * n)[:n]
        found[i] = True
    conf[ids == PAD_INTEREST] = 0.0
    return SubjectInputs(ids, conf, found)


def _states(values: list[Any], empty_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cached states (arrays, or None) -> (B, d) with the empty state where missing."""
    has = np.array([v is not None and len(v) == len(empty_state) for v in values], bool)
    hidden = np.tile(empty_state.astype(np.float32), (len(values), 1))
    if has.any():
        hidden[has] = np.asarray([v for v, h in zip(values, has, strict=True) if h], np.float32)
    return hidden, has


def _realtime(values: list[Any], n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    pins = np.zeros((len(values), n), np.int64)
    mask = np.zeros((len(values), n), bool)
    seen = []
    for i, seq in enumerate(values):
        seq = np.asarray(seq if seq is not None else [], np.int64)
        seen.append(seq)
        last = seq[-n:]
        if len(last):
            pins[i, n - len(last) :] = last
            mask[i, n - len(last) :] = True
    return pins, mask, seen


def _demographics(profiles: list[dict[str, Any] | None], cfg: ModelConfig) -> np.ndarray:
    present = np.array([p is not None for p in profiles], bool)
    codes = np.zeros((len(present), 4), np.int64)  # a user without a profile: all unknown
    if present.any():
        found = [p for p in profiles if p is not None]
        codes[present] = encode_demographics(
            *([p.get(f) or "" for p in found] for f in VIEW_FEATURES[USER_PROFILE]),
            cfg.country_buckets,
            cfg.segment_buckets,
        )
    return codes
