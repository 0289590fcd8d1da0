"""The interests of every indexed pin, saved beside the index so serving never reads the lake.

``pin_interests.npz`` holds ``pin_id`` (N,) int64 sorted and ``interest_ids`` (N, S) int64
(``PAD_INTEREST`` in empty slots). ``batch index`` writes it with the index; its sha256 is
recorded in ``metadata.json`` like the index's, and serving's interest and diversity rules
read it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from towerline.core.contracts import INTEREST_SLOTS, PAD_INTEREST
from towerline.core.errors import RefusedError

INTERESTS_FILE = "pin_interests.npz"


@dataclasses.dataclass(frozen=True)
class PinInterests:
    """Interest ids of N pins, looked up by pin id."""

    pin_id: np.ndarray  # (N,) int64, sorted
    interest_ids: np.ndarray  # (N, INTEREST_SLOTS) int64

    @classmethod
    def build(cls, pin_ids: np.ndarray, interest_ids: np.ndarray) -> PinInterests:
        order = np.argsort(np.asarray(pin_ids, np.int64), kind="stable")
        ids = np.asarray(interest_ids, np.int64).reshape(-1, INTEREST_SLOTS)
        return cls(np.asarray(pin_ids, np.int64)[order], ids[order])

    def lookup(self, pins: np.ndarray) -> np.ndarray:
        """Pin ids (any shape S) -> (S + (INTEREST_SLOTS,)) interest ids; unknown pins padded."""
        flat = np.asarray(pins, np.int64).reshape(-1)
        out = np.full((len(flat), INTEREST_SLOTS), PAD_INTEREST, np.int64)
        if len(self.pin_id):
            row = np.clip(np.searchsorted(self.pin_id, flat), 0, len(self.pin_id) - 1)
            found = self.pin_id[row] == flat
            out[found] = self.interest_ids[row[found]]
        return out.reshape(np.shape(pins) + (INTEREST_SLOTS,))

    def save(self, directory: Path) -> Path:
        path = Path(directory) / INTERESTS_FILE
        with open(path, "wb") as handle:
            np.savez(handle, pin_id=self.pin_id, interest_ids=self.interest_ids)
        return path

    @classmethod
    def load(cls, directory: Path) -> PinInterests:
        path = Path(directory) / INTERESTS_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["pin_id"].astype(np.int64), data["interest_ids"].astype(np.int64))
        except (OSError, KeyError, ValueError) as exc:
            raise RefusedError(f"cannot read the pin interests {path}: {exc}") from None
