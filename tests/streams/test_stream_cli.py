"""The `towerline stream run` command line: durations and help."""

import pytest
import typer
from typer.testing import CliRunner

from towerline.cli_stream import parse_duration, stream_run_cmd


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("12h", 43_200.0), ("1d", 86_400.0),
     ("250ms", 0.25), ("1.5h", 5_400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-1s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_help_names_every_knob() -> None:
    app = typer.Typer()
    app.command()(stream_run_cmd)
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in ("--group", "--bootstrap-servers", "--online", "--half-life",
                   "--allowed-lateness", "--future-skew", "--metrics-port"):  # fmt: skip
        assert option in result.output
