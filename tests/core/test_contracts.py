"""The contracts' names are the ones the Feast declarations and the Avro schemas use."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from towerline.core import contracts as c
from towerline.core.featurestore import REPO_DIR, _declarations
from towerline.core.slots import interest_slots

AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def test_view_features_match_the_declarations() -> None:
    repo = _declarations(REPO_DIR / "declarations.py").REPO
    # Feast keeps a view's fields unordered, so names are compared as sets.
    declared = {v.name: {f.name for f in v.features} for v in repo.feature_views()}
    assert declared == {view: set(names) for view, names in c.VIEW_FEATURES.items()}
    tags = {v.name: v.tags for v in repo.feature_views()}
    assert all(c.FRESHNESS_TAG in t and c.WRITTEN_BY_TAG in t for t in tags.values())
    assert set(c.BATCH_VIEWS) | set(c.STREAM_VIEWS) == set(declared)


def test_enums_are_the_avro_symbols() -> None:
    symbols = {}
    for path in AVRO.glob("*.avsc"):
        for field in json.loads(path.read_text()).get("fields", []):
            kind = field["type"]
            if isinstance(kind, dict) and kind.get("type") == "enum":
                symbols[kind["name"]] = tuple(kind["symbols"])
    assert c.ENGAGEMENT_ACTIONS in symbols.values()
    assert c.CONVERSION_ACTIONS in symbols.values()


def test_interest_slots_pad_and_truncate() -> None:
    ids = pa.array([[7], [], None, [1, 2, 3, 4]], pa.list_(pa.int32()))
    conf = pa.array([[0.5], [], None, [0.1, 0.2, 0.3, 0.4]], pa.list_(pa.float32()))
    slot_ids, slot_conf = interest_slots(ids, conf)
    assert slot_ids.shape == (4, c.INTEREST_SLOTS) and slot_ids.dtype == np.int64
    assert slot_ids[0].tolist() == [7, c.PAD_INTEREST, c.PAD_INTEREST]
    assert slot_ids[2].tolist() == [c.PAD_INTEREST] * 3
    assert slot_ids[3].tolist() == [1, 2, 3]
    assert np.allclose(slot_conf[0], [0.5, 0, 0]) and np.allclose(slot_conf[3], [0.1, 0.2, 0.3])
