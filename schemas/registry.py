"""A local, file-based registry of Avro schema ids (Confluent-compatible ids).

The registry is one JSON file ``{"subjects": {subject: [{"id", "schema"}...]}}``.
Ids are global and never reused, as in a Confluent Schema Registry, so a real
registry can replace this file without changing the wire format. The built-in
registry (``schemas/registry.json``) fixes the ids of the shipped schemas so every
producer and consumer agrees on them without a running service.
"""

import json
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import SchemaError
from towerline.core.files import write_text_atomic

AVRO_DIR = Path(__file__).with_name("avro")
BUILTIN_REGISTRY = Path(__file__).with_name("registry.json")


def load_avsc(name: str) -> dict[str, Any]:
    """The shipped Avro schema ``schemas/avro/<name>.avsc`` as a dict."""
    path = AVRO_DIR / f"{name}.avsc"
    if not path.is_file():
        known = sorted(p.stem for p in AVRO_DIR.glob("*.avsc"))
        raise SchemaError(name, "<schema>", f"no such schema; known: {known}")
    return json.loads(path.read_text())


def canonical(schema: dict[str, Any]) -> str:
    return fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema))


class SchemaRegistry:
    """Subjects → versions → (id, schema), persisted to one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else BUILTIN_REGISTRY
        self._subjects: dict[str, list[dict[str, Any]]] = {}
        if self.path.is_file():
            self._subjects = json.loads(self.path.read_text())["subjects"]
        self._by_id: dict[int, tuple[str, Any]] = {}
        for subject, versions in self._subjects.items():
            for version in versions:
                parsed = fastavro.parse_schema(version["schema"])
                self._by_id[version["id"]] = (subject, parsed)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject``; the same schema again returns its id."""
        form = canonical(schema)
        for version in self._subjects.get(subject, []):
            if canonical(version["schema"]) == form:
                return version["id"]
        new_id = max(self._by_id, default=0) + 1
        self._subjects.setdefault(subject, []).append({"id": new_id, "schema": schema})
        self._by_id[new_id] = (subject, fastavro.parse_schema(schema))
        self._save()
        return new_id

    def by_id(self, schema_id: int) -> tuple[str, Any]:
        """(subject, parsed writer schema) of ``schema_id``."""
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaError("<registry>", "<wire>", f"unknown schema id {schema_id}") from None

    def latest(self, subject: str) -> tuple[int, Any]:
        """(id, parsed schema) of the newest version of ``subject``."""
        versions = self._subjects.get(subject)
        if not versions:
            raise SchemaError(subject, "<schema>", f"subject not registered in {self.path}")
        newest = versions[-1]
        return newest["id"], self._by_id[newest["id"]][1]

    def subjects(self) -> list[str]:
        return sorted(self._subjects)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"subjects": self._subjects}, indent=1, sort_keys=True)
        write_text_atomic(self.path, body)
