"""Process-wide runtime settings that long-running towerline processes share."""

import gc


def tune_gc() -> None:
    """Process-wide GC settings for a stream worker or a server; call once, from an entry
    point, after the heavy start-up objects exist (models, indexes, Feast).

    A stream batch allocates ~10 objects per event and an answer ~300 (candidates); with
    Python's default thresholds (700 allocations) the collector runs hundreds of times a
    second and walks everything Feast, torch and pandas left alive: measured ~10 µs per
    event in the worker, and pauses that land in a server's tail latency. Nearly all of it
    is acyclic and freed by reference counting, so collect rarely and leave the start-up
    heap out of it.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
