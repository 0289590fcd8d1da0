"""Names that become paths stay names; the error root carries the documented exit codes."""

import pytest

from towerline.core import errors
from towerline.core.names import check_name, check_version


@pytest.mark.parametrize("name", ["two_tower", "m-1", "A.b", "x" * 128])
def test_plain_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../../x", "a/b", "..", ".hidden", "x" * 129, "a b", "é"])
def test_names_that_would_escape_are_refused(name: str) -> None:
    with pytest.raises(errors.InputError, match="model name .* is not a plain name"):
        check_name(name)


def test_versions() -> None:
    assert check_version("v12") == "v12"
    assert check_version("latest", allow_latest=True) == "latest"
    for bad in ("1", "v0", "v1/../x", "latest", "V1"):
        with pytest.raises(errors.InputError, match="is not a model version"):
            check_version(bad)


def test_exit_codes_follow_the_kind_of_error() -> None:
    assert errors.TowerlineError("x").exit_code == errors.EXIT_FAILED == 1
    assert errors.InputError("x").exit_code == errors.EXIT_USAGE == 2
    assert errors.UnavailableError("x").exit_code == 1
    assert isinstance(errors.InputError("x"), ValueError)
