"""The CLI's one error handler: one line, the documented exit code, --debug for the rest."""

from pathlib import Path

import pytest

from tests.cli.cli_kit import assert_user_error, towerline, towerline_here

DEAD_REDIS = "127.0.0.1:1"  # nothing listens on port 1


@pytest.mark.parametrize(
    "args",
    [
        ["features", "apply", "--online", "redis", "--redis-url", DEAD_REDIS],
        ["features", "load-profiles", "--lake", "{lake}", "--online", "redis",
         "--redis-url", DEAD_REDIS],
    ],
)  # fmt: skip
def test_an_unreachable_redis_is_named_not_reported_as_success(args, tmp_path: Path) -> None:
    from towerline.world import WorldConfig, generate

    lake = tmp_path / "lake"
    generate(WorldConfig(users=20, pins=64, days=1, seed=1), lake, progress=False)
    data_dir = tmp_path / "feast"
    ran = towerline_here(*[a.format(lake=lake) for a in args], "--data-dir", str(data_dir))
    assert_user_error(ran, 1, "cannot reach the Redis online store at 127.0.0.1:1")
    assert "applied" not in ran.stdout


def test_bad_usage_is_one_line_with_where_to_look() -> None:
    ran = towerline_here("evaluate", "--lake", "x", "--registry", "y", "--k", "ten")
    assert_user_error(ran, 2, "--k", "towerline evaluate --help")
    ran = towerline_here("batch", "encode", "--lake", "x", "--registry", "y", "--dt", "2025-02-30")
    assert_user_error(ran, 2, "--dt", "'2025-02-30' is not a date")
    ran = towerline_here("no-such-command")
    assert_user_error(ran, 2, "no-such-command")


def test_debug_shows_the_traceback_the_plain_run_hides(tmp_path: Path) -> None:
    args = ["evaluate", "--lake", str(tmp_path), "--registry", str(tmp_path), "--version", "v9"]
    plain = towerline(*args)
    assert_user_error(plain, 2, "no version 'v9'")
    debug = towerline("--debug", *args)
    assert debug.code == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_help_lists_exit_codes_and_every_group() -> None:
    ran = towerline("--help")
    assert ran.code == 0
    for word in ("Exit codes", "130", "--debug", "batch", "stream", "publish", "demo"):
        assert word in ran.stdout


@pytest.mark.parametrize("rate", ["-5", "0", "nan", "inf"])
def test_produce_refuses_a_rate_that_is_not_one(rate: str) -> None:
    ran = towerline_here("produce", "engagements", "--lake", "x", "--dt", "2025-06-30", "--rate", rate)  # fmt: skip
    assert_user_error(ran, 2, "--rate", "records per second > 0")


def test_a_version_that_is_not_one_is_usage(tmp_path: Path) -> None:
    ran = towerline_here("evaluate", "--lake", tmp_path, "--registry", tmp_path, "--version", "1")
    assert_user_error(ran, 2, "--version", "'1' is not a model version")
