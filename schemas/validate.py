"""Field-level and domain checks that name the offending field.

``check_fields`` runs only when fastavro refused a record, to turn its message into
``SchemaError(schema, field, reason)``; ``check_domain`` holds the rules Avro types
cannot say (non-negative ids, at most 3 interests, confidences in (0, 1]).
"""

from typing import Any

from fastavro.validation import validate

from schemas.errors import SchemaError
from towerline.core.contracts import MAX_INTERESTS_PER_PIN

_MISSING = object()


def check_fields(subject: str, schema: dict[str, Any], record: Any) -> None:
    if not isinstance(record, dict):
        raise SchemaError(subject, "<record>", f"expected a dict, got {type(record).__name__}")
    for field in schema["fields"]:
        value = record.get(field["name"], _MISSING)
        if value is _MISSING:
            if "default" in field:
                continue
            raise SchemaError(subject, field["name"], "missing required field")
        if not validate(value, field["type"], raise_errors=False):
            raise SchemaError(
                subject,
                field["name"],
                f"value {value!r} is not a valid {_type_name(field['type'])}",
            )


def check_domain(subject: str, record: dict[str, Any]) -> None:
    rule = _RULES.get(subject)
    if rule is not None:
        rule(subject, record)


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return avro_type.get("logicalType") or avro_type.get("name") or avro_type["type"]
    return str(avro_type)


def _event(subject: str, record: dict[str, Any]) -> None:
    if not isinstance(record, dict):
        raise SchemaError(subject, "<record>", f"expected a dict, got {type(record).__name__}")
    if record.get("event_id") == "":
        raise SchemaError(subject, "event_id", "must not be empty")
    for key in ("user_id", "pin_id"):
        value = record.get(key)
        if isinstance(value, int) and value < 0:
            raise SchemaError(subject, key, f"must be >= 0, got {value}")


def _pin_profile(subject: str, record: dict[str, Any]) -> None:
    ids = record.get("interest_ids")
    confidences = record.get("interest_confidences")
    if not isinstance(ids, list) or not isinstance(confidences, list):
        return  # type errors are reported by check_fields
    if len(ids) > MAX_INTERESTS_PER_PIN:
        raise SchemaError(
            subject, "interest_ids", f"at most {MAX_INTERESTS_PER_PIN}, got {len(ids)}"
        )
    if len(ids) != len(confidences):
        raise SchemaError(
            subject,
            "interest_confidences",
            f"{len(confidences)} confidences for {len(ids)} interest_ids",
        )
    for c in confidences:
        if not isinstance(c, int | float) or not 0.0 < c <= 1.0:
            raise SchemaError(subject, "interest_confidences", f"{c!r} is not in (0, 1]")


_RULES = {"Engagement": _event, "OffsiteConversion": _event, "PinProfile": _pin_profile}
