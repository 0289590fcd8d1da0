"""`towerline import …`: public data sets into the Parquet lake. Parses arguments only.

Registered by towerline/cli/app.py as ``app.add_typer(import_app, name="import")``.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

import_app = typer.Typer(no_args_is_help=True)


@import_app.callback()
def import_group() -> None:
    """Import public data sets into the Parquet lake."""


# Enough to see what is wrong without flooding the terminal on a badly broken file.
SHOWN_MALFORMED = 20


def import_movielens_cmd(
    dir: Annotated[
        Path,
        typer.Argument(
            help="An unzipped GroupLens download: ml-100k (u.data, u.user, u.item) or "
            "ml-1m (ratings.dat, users.dat, movies.dat).",
            exists=True,
            file_okay=False,
            dir_okay=True,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Lake directory to write.")],
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace the offsite_conversions, pins and users tables if present."),
    ] = False,
    strict: Annotated[
        bool, typer.Option(help="Exit 1 if any line was malformed (they are skipped either way).")
    ] = False,
) -> None:
    """Import MovieLens: ratings → offsite conversions, movies → pins, users → profiles.

    Actions by rating: 5 CHECKOUT, 4 ADD_TO_CART, 3 SIGNUP, 1-2 PAGE_VISIT.

    Genres become interests: the first 3 in GroupLens genre order, each with
    confidence 1/number of genres of the movie.

    Malformed lines are skipped and printed as FILE:LINE: reason on stderr; a ratings file
    without one valid line is refused (exit 2). The lake changes only when the whole import
    succeeds. Prints a JSON summary last.
    """
    from towerline.importers.movielens import import_movielens

    # A MovieLensError (exit 2) reaches the CLI's one error handler: one `error:` line.
    summary = import_movielens(dir, out, overwrite=overwrite)
    for bad in summary.malformed[:SHOWN_MALFORMED]:
        typer.echo(f"malformed: {bad}", err=True)
    if len(summary.malformed) > SHOWN_MALFORMED:
        typer.echo(f"… and {len(summary.malformed) - SHOWN_MALFORMED} more", err=True)
    typer.echo(json.dumps(summary.to_json()))
    if strict and summary.malformed:
        raise typer.Exit(1)


import_app.command("movielens")(import_movielens_cmd)
