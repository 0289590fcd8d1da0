"""Synthetic world generator: a deterministic, learnable Parquet lake for towerline.

``generate(WorldConfig(...), out_dir)`` writes the four lake tables of ``schemas.arrow``
(``offsite_conversions``/``engagements`` partitioned by ``dt=``, ``pins``, ``users``), the
planted truth under ``truth/`` and ``world.json``.
"""

from towerline.world.config import WorldConfig
from towerline.world.pipeline import generate

__all__ = ["WorldConfig", "generate"]
