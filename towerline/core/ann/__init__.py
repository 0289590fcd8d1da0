"""The ANN index shared by batch/ (writes it) and serving/ (reads it); imports neither.

``HnswIndex`` (``towerline.core.ann.hnsw``) wraps the graph and its metadata;
``towerline.core.ann.store`` lays builds out on disk and flips the ``current`` and
``serving.json`` pointers atomically.
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
from towerline.core.ann.store import (
    CURRENT,
    SERVING,
    current_dir,
    dir_name,
    flip_current,
    list_indexes,
    model_root,
    new_staging,
    prune,
    publish_index,
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
    "AnnError",
    "HnswIndex",
    "HnswParams",
    "IndexIntegrityError",
    "current_dir",
    "dir_name",
    "flip_current",
    "list_indexes",
    "model_root",
    "new_staging",
    "prune",
    "publish_index",
    "read_metadata",
    "read_pointer",
    "rollback",
    "verify_index",
]
