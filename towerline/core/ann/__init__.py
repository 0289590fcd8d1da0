"""The ANN index shared by batch/ (writes it) and serving/ (reads it); imports neither.

``HnswIndex`` (``towerline.core.ann.hnsw``) wraps the graph and its metadata;
``towerline.core.ann.store`` lays builds out on disk and flips the ``current`` and
``serving.json`` pointers atomically; ``towerline.core.ann.sets`` groups the shards of a
sharded build into one set and ``towerline.core.ann.shards`` splits pins and merges answers.
"""

from towerline.core.ann.hnsw import (
    FORMAT,
    INDEX_FILE,
    METADATA_FILE,
    METRIC,
    AnnError,
    HnswIndex,
    HnswParams,
    IndexIntegrityError,
    read_metadata,
    verify_index,
)
from towerline.core.ann.sets import SHARD, IndexSet, set_problems, verify_set
from towerline.core.ann.shards import ShardedIndex, merge_top_k, shard_of
from towerline.core.ann.store import (
    CURRENT,
    SERVING,
    current_dir,
    current_set,
    dir_name,
    flip_current,
    index_sets,
    list_indexes,
    model_root,
    new_staging,
    prune,
    publish_index,
    publish_set,
    read_pointer,
    rollback,
)

__all__ = [
    "CURRENT",
    "FORMAT",
    "INDEX_FILE",
    "METADATA_FILE",
    "METRIC",
    "SERVING",
    "SHARD",
    "AnnError",
    "HnswIndex",
    "HnswParams",
    "IndexIntegrityError",
    "IndexSet",
    "ShardedIndex",
    "current_dir",
    "current_set",
    "dir_name",
    "flip_current",
    "index_sets",
    "list_indexes",
    "merge_top_k",
    "model_root",
    "new_staging",
    "prune",
    "publish_index",
    "publish_set",
    "read_metadata",
    "read_pointer",
    "rollback",
    "set_problems",
    "shard_of",
    "verify_index",
    "verify_set",
]
