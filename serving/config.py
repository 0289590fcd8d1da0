"""The one frozen config of a serving process (the CLI builds it; nothing here reads env)."""

import dataclasses
from pathlib import Path

from towerline.core.contracts import DEFAULT_MODEL_NAME


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Where the published version lives and how requests are batched.

    ``batch_window_ms``: how long the first request of a micro-batch waits for others
    (0 = no waiting; requests that are already queued still share one batch).
    ``keep_towers``: online towers of this many versions stay loaded, so a swap or a
    rollback to one of them is instant.
    """

    indexes: Path
    registry: Path
    model_name: str = DEFAULT_MODEL_NAME
    batch_window_ms: float = 2.0
    max_batch: int = 64
    poll_s: float = 1.0
    keep_towers: int = 3
    torch_threads: int = 1
    max_body_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.batch_window_ms < 0 or self.max_batch < 1 or self.poll_s <= 0:
            raise ValueError("batch_window_ms >= 0, max_batch >= 1 and poll_s > 0 are required")
