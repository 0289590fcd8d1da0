"""Synthetic world generator: a deterministic, learnable Parquet lake for towerline.

``generate(WorldConfig(...), out_dir)`` writes the four lake tables of ``schemas.arrow``
(``offsite_conversions``/``engagements`` partitioned by ``dt=``, ``pins``, ``users``), the
planted truth under ``truth/`` (per user, per pin, per conversion) and ``world.json``.
``towerline.world.oracle.load_oracle(out_dir)`` scores pins for held-out conversions by
the generator's own probability given their planted intent (the ceiling of any model).
"""

from towerline.world.config import WorldConfig
from towerline.world.pipeline import generate

__all__ = ["WorldConfig", "generate"]
