"""The `towerline stream run` command line: its help."""

import typer
from typer.testing import CliRunner

from towerline.cli.stream import stream_run_cmd


def test_help_names_every_knob() -> None:
    app = typer.Typer()
    app.command()(stream_run_cmd)
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in ("--group", "--bootstrap-servers", "--online", "--half-life",
                   "--allowed-lateness", "--future-skew", "--metrics-port", "--processes"):  # fmt: skip
        assert option in result.output
