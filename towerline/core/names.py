"""Names that become paths (model names, versions, state namespaces) must stay names.

A model name like ``../../x`` would write, and later prune, outside the registry or the
index store, so every such name is checked where it enters, with the option it came from.
"""

import re

from towerline.core.errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^v[1-9][0-9]*$")


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a plain name (letters, digits, ``_ . -``; no ``/``, no ``..``)."""
    if isinstance(value, str) and _NAME.match(value) and ".." not in value:
        return None
    return (
        f"{value!r} is not a plain name: use letters, digits, '_', '.' or '-' "
        "(at most 128, starting with a letter or digit; no '/' or '..')"
    )


def version_problem(value: object, *, allow_latest: bool = False) -> str | None:
    """Why ``value`` is not a version name ``v1``, ``v2``, … (or ``latest`` when allowed)."""
    if (allow_latest and value == "latest") or (isinstance(value, str) and _VERSION.match(value)):
        return None
    hint = "v1, v2, … or latest" if allow_latest else "v1, v2, …"
    return f"{value!r} is not a model version; expected {hint}"


def check_name(value: str, what: str = "model name") -> str:
    """``value`` if it is a plain name, else an ``InputError`` naming ``what``."""
    if problem := name_problem(value):
        raise InputError(f"{what} {problem}")
    return value


def check_version(value: str, what: str = "version", *, allow_latest: bool = False) -> str:
    """``value`` if it is a version name, else an ``InputError`` naming ``what``."""
    if problem := version_problem(value, allow_latest=allow_latest):
        raise InputError(f"{what} {problem}")
    return value
