"""Avro encoding in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, body.

``AvroCodec.encode`` validates before writing; ``decode`` resolves the writer schema
named by the id against the reader's schema (Avro schema evolution), then applies
the domain rules of ``schemas.validate``. Every failure is a ``SchemaError`` naming
the schema, the field and the reason, so a consumer can send it to a dead-letter topic:
``<wire>`` for the framing, ``<schema>`` for a schema id that is unknown or of another
subject (or a writer schema that does not resolve), ``<body>`` for a body that does not
decode or is followed by bytes the schema does not account for.
"""

import io
import struct
from typing import Any

import fastavro

from schemas.errors import SchemaError
from schemas.registry import SchemaRegistry
from schemas.validate import check_domain, check_fields

MAGIC = 0
_HEADER = struct.Struct(">bI")


class AvroCodec:
    """Encode/decode records of registered subjects.

    ``reader_schemas`` pins the schema a consumer reads with, per subject; by default a
    consumer reads with the newest registered version of the writer's subject.
    """

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        reader_schemas: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.registry = registry or SchemaRegistry()
        self._readers = {s: fastavro.parse_schema(v) for s, v in (reader_schemas or {}).items()}

    def encode(self, subject: str, record: dict[str, Any]) -> bytes:
        schema_id, schema = self.registry.latest(subject)
        check_domain(subject, record)
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(buf, schema, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            check_fields(subject, schema, record)  # names the field when it can
            raise SchemaError(subject, "<body>", f"cannot encode: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes, expected_subject: str | None = None) -> tuple[str, dict]:
        """(subject, record) of one framed message."""
        schema_id = read_schema_id(data)
        subject, writer = self._writer(schema_id)
        if expected_subject and subject != expected_subject:
            raise SchemaError(
                expected_subject,
                "<schema>",
                f"schema id {schema_id} is {subject}, not {expected_subject}",
            )
        reader = self._readers.get(subject) or self.registry.latest(subject)[1]
        body = io.BytesIO(data[_HEADER.size :])
        try:
            record = fastavro.schemaless_reader(body, writer, reader)
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise SchemaError(subject, "<body>", f"undecodable body: {exc!r}") from exc
        except fastavro.read.SchemaResolutionError as exc:
            raise SchemaError(subject, "<schema>", f"cannot resolve writer schema: {exc}") from exc
        # fastavro stops where the writer schema ends: bytes after that mean the body is
        # not what its schema id says (a mislabelled or concatenated message), so the
        # decoded fields cannot be trusted either.
        extra = len(data) - _HEADER.size - body.tell()
        if extra:
            raise SchemaError(subject, "<body>", f"{extra} trailing bytes after the record")
        check_domain(subject, record)
        return subject, record

    def _writer(self, schema_id: int) -> tuple[str, Any]:
        """(subject, writer schema) of ``schema_id``; an unknown id is a schema problem."""
        try:
            return self.registry.by_id(schema_id)
        except SchemaError as exc:
            raise SchemaError(exc.schema, "<schema>", exc.reason) from None


def read_schema_id(data: bytes) -> int:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError("<unknown>", "<wire>", f"expected bytes, got {type(data).__name__}")
    if len(data) < _HEADER.size:
        raise SchemaError(
            "<unknown>", "<wire>", f"message of {len(data)} bytes is shorter than the 5-byte header"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SchemaError("<unknown>", "<wire>", f"magic byte is {magic}, expected {MAGIC}")
    return schema_id
