"""Fixed interest slots from variable-length lists: the one padding every tower input uses.

Training (``model.lake_io``), the index job (``batch.index``) and serving all turn a pin's
``interest_ids`` / ``interest_confidences`` lists into ``(n, INTEREST_SLOTS)`` arrays here,
so the towers see the same layout wherever they run.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from towerline.core.contracts import INTEREST_SLOTS, PAD_INTEREST


def pad_slots(column: pa.ChunkedArray | pa.Array, fill: float, dtype: type) -> np.ndarray:
    """A list column (n rows) -> (n, INTEREST_SLOTS) array, truncated / padded with ``fill``."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lists).to_numpy()
    row = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = np.full((len(lengths), INTEREST_SLOTS), fill, dtype=dtype)
    keep = position < INTEREST_SLOTS
    out[row[keep], position[keep]] = flat[keep]
    return out


def interest_slots(
    ids: pa.ChunkedArray | pa.Array, confidences: pa.ChunkedArray | pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Interest id and confidence lists (n rows) -> ids (n, S) int64, confidences (n, S)
    float32, with ``PAD_INTEREST`` / 0.0 in empty slots (and 0.0 wherever the id is padding)."""
    interests = pad_slots(ids, PAD_INTEREST, np.int64)
    conf = pad_slots(confidences, 0.0, np.float32)
    conf[interests == PAD_INTEREST] = 0.0
    return interests, conf
