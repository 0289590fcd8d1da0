"""The one error type of the event contracts."""

from towerline.core.errors import InputError


class SchemaError(InputError):
    """A record that does not encode, decode or validate against its schema.

    ``schema`` is the Avro record name (e.g. ``Engagement``), ``field`` the offending
    field (``"<wire>"`` for framing problems, ``"<body>"`` for an undecodable body).
    """

    def __init__(self, schema: str, field: str, reason: str) -> None:
        self.schema = schema
        self.field = field
        self.reason = reason
        super().__init__(f"{schema}.{field}: {reason}")


class LakeError(InputError):
    """The lake does not hold what was asked for."""
