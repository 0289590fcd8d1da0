"""The version a process serves, and the watcher that follows ``serving.json``.

``VersionHolder.current`` is swapped by one assignment after the new version loaded and
verified, so a batch that read ``current`` keeps its version to the end. A publish that
does not verify is refused with a log line and a metric; the old version keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from serving.config import ServeConfig
from serving.metrics import ServingMetrics
from serving.versions import Served, ServingError, TowerCache, load_served, read_serving

log = logging.getLogger(__name__)


class VersionHolder:
    def __init__(self, cfg: ServeConfig, metrics: ServingMetrics) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.towers = TowerCache(cfg.registry, cfg.model_name, cfg.keep_towers)
        self.current: Served | None = None
        self.last_error: str | None = None
        self._seen: str | None = None  # the serving.json text last acted on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load what ``serving.json`` names if it changed; True when a new version went live."""
        try:
            pointer = read_serving(Path(self.cfg.indexes), self.cfg.model_name)
        except (OSError, ValueError) as exc:
            return self._refuse(f"cannot read serving.json: {exc}", None)
        text = json.dumps(pointer, sort_keys=True)
        if pointer is None or text == self._seen:
            return False
        self._seen = text
        current = self.current
        if (
            current is not None
            and (pointer.get("model_version"), pointer.get("dir")) == current.key
        ):
            return False
        try:
            served = load_served(
                self.cfg.indexes, self.cfg.registry, self.cfg.model_name, pointer, self.towers
            )
        except ServingError as exc:
            return self._refuse(str(exc), pointer)
        self.current = served
        self.last_error = None
        self.metrics.swaps.inc()
        self.metrics.served.current = (served.model_name, served.model_version, served.built_at)
        log.info("serving %s %s (%s)", served.model_name, served.model_version, served.index_dir)
        return True

    def _refuse(self, problem: str, pointer: dict | None) -> bool:
        self.last_error = problem
        self.metrics.refused.inc()
        keeping = self.current.model_version if self.current else "nothing"
        log.warning("refused the published version (%s); still serving %s", problem, keeping)
        return False

    def start(self) -> None:
        """Follow ``serving.json`` every ``poll_s`` seconds on a daemon thread."""
        self._thread = threading.Thread(target=self._watch, name="serving-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.cfg.poll_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
