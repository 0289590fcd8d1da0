"""The ANN index shared by batch/ (writes it) and serving/ (reads it); imports neither.

``HnswIndex`` (``towerline.ann.hnsw``) wraps the graph and its metadata;
``towerline.ann.store`` lays builds out on disk and flips the ``current`` and
``serving.json`` pointers atomically.
"""

from towerline.ann.hnsw import (
    FORMAT,
    INDEX_FILE,
    METADATA_FILE,
    METRIC,
    AnnError,
    HnswIndex,
    HnswParams,
    IndexIntegrityError,
    read_metadata,
    sha256_file,
    verify_index,
)
from towerline.ann.store import (
    CURRENT,
    SERVING,
    current_dir,
    dir_name,
    flip_current,
    fsync_dir,
    fsync_tree,
    list_indexes,
    model_root,
    new_staging,
    prune,
    publish_dir,
    publish_index,
    read_pointer,
    rollback,
    write_json_atomic,
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
    "fsync_dir",
    "fsync_tree",
    "list_indexes",
    "model_root",
    "new_staging",
    "prune",
    "publish_dir",
    "publish_index",
    "read_metadata",
    "read_pointer",
    "rollback",
    "sha256_file",
    "verify_index",
    "write_json_atomic",
]
