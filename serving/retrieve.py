"""One micro-batch of retrieval: features -> online tower -> ANN -> rules, on one version.

``Retriever.run`` takes B requests and answers them all with the ``Served`` version it
was given, so every answer names the version that computed it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import feast
import numpy as np
import torch

from serving.features import VIEWS, SubjectInputs, UserInputs, read_inputs
from serving.online import OnlineReader
from serving.rules import Rules, apply_rules
from serving.versions import Served, Tower


@dataclasses.dataclass(frozen=True)
class Ask:
    """One retrieval request (validated by the HTTP layer)."""

    user_id: int
    subject_pin_id: int | None = None
    k: int = 100
    interests: tuple[int, ...] | None = None
    exclude_seen: bool = True
    max_per_interest: int | None = None


@dataclasses.dataclass(frozen=True)
class Answer:
    model_version: str
    index_built_at: str
    history: str  # "cached" | "missing"
    context: str  # "subject_pin" | "none"
    pin_ids: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass(frozen=True)
class Embedded:
    """User embeddings of a batch and the inputs they came from."""

    vectors: np.ndarray  # (B, dim) float32, L2-normalised
    users: UserInputs
    subjects: SubjectInputs


StageTimer = Callable[[str, float], None]


def forward(tower: Tower, users: UserInputs, subjects: SubjectInputs) -> np.ndarray:
    """The online tower of one version on a batch's inputs -> (B, dim) embeddings."""
    # Unoptimised execution runs the traced graph as it is: the optimising executor
    # re-profiles and re-specialises it for each new batch size (ms-long first calls, a
    # tail-latency source) and gains nothing on CPU for this graph.
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        return tower.traced(
            torch.from_numpy(users.hidden),
            torch.from_numpy(subjects.interest_ids),
            torch.from_numpy(subjects.interest_conf),
            torch.from_numpy(users.demographics),
            torch.from_numpy(users.realtime_pins),
            torch.from_numpy(users.realtime_mask),
            torch.from_numpy(users.since_last_s),
        ).numpy()


def _noop(stage: str, seconds: float) -> None:
    return None


class Retriever:
    """Reads features, runs the tower and queries the index for a batch of requests."""

    def __init__(self, store: feast.FeatureStore, stage_timer: StageTimer = _noop) -> None:
        self.reader = OnlineReader(store, VIEWS)
        self.timed = stage_timer

    def embed(
        self, served: Served, user_ids: Sequence[int], subject_pins: Sequence[int | None]
    ) -> Embedded:
        """(B,) users and subject pins -> (B, dim) contextual user embeddings of ``served``."""
        t0 = time.perf_counter()
        tower = served.tower
        empty = tower.empty_state.numpy()
        now_ms = int(time.time() * 1000)  # the request time the gap is measured to
        users, subjects = read_inputs(
            self.reader, served.model_version, user_ids, subject_pins, tower.cfg, empty, now_ms
        )
        t1 = time.perf_counter()
        vectors = forward(tower, users, subjects)
        self.timed("features", t1 - t0)
        self.timed("tower", time.perf_counter() - t1)
        return Embedded(vectors, users, subjects)

    def run(self, served: Served, asks: Sequence[Ask]) -> list[Answer]:
        embedded = self.embed(served, [a.user_id for a in asks], [a.subject_pin_id for a in asks])
        rules = [
            Rules(
                seen=embedded.users.seen[i] if a.exclude_seen else np.zeros(0, np.int64),
                interests=a.interests,
                max_per_interest=a.max_per_interest,
            )
            for i, a in enumerate(asks)
        ]
        picked = self._search(served, embedded.vectors, asks, rules)
        return [
            Answer(
                model_version=served.model_version,
                index_built_at=served.built_at,
                history="cached" if embedded.users.has_state[i] else "missing",
                context="subject_pin" if embedded.subjects.found[i] else "none",
                pin_ids=ids,
                scores=scores,
            )
            for i, (ids, scores) in enumerate(picked)
        ]

    def _search(
        self, served: Served, vectors: np.ndarray, asks: Sequence[Ask], rules: list[Rules]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Over-fetch for the rules; ask again, 4x deeper, for requests still short of k."""
        size = len(served.index)
        fetch = [min(size, a.k + len(r.seen) + (a.k if r.needs_interests else 0)) for a, r in zip(asks, rules, strict=True)]  # fmt: skip
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(asks)
        pending = list(range(len(asks)))
        while pending:
            depth = max(fetch[i] for i in pending)
            t0 = time.perf_counter()
            ids, scores = served.index.query(vectors[pending], depth)
            t1 = time.perf_counter()
            short = []
            for row, i in enumerate(pending):
                got = apply_rules(ids[row], scores[row], rules[i], served.pins, asks[i].k)
                results[i] = got
                if len(got[0]) < asks[i].k and depth < size:
                    fetch[i] = min(size, depth * 4)
                    short.append(i)
            self.timed("ann", t1 - t0)
            self.timed("filters", time.perf_counter() - t1)
            pending = short
        return [r for r in results if r is not None]
