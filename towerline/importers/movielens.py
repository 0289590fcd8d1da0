"""Import a GroupLens MovieLens download (ml-100k or ml-1m layout) into the Parquet lake.

Mapping (documented in the README):
- every rating → one ``offsite_conversions`` event at its unix time, partitioned by UTC day;
  action by rating: 5 CHECKOUT, 4 ADD_TO_CART, 3 SIGNUP, 1–2 PAGE_VISIT;
  event_id ``<layout>-<user>-<movie>`` (MovieLens holds one rating per user and movie).
- every movie → one ``pins`` row: interests = genre ids in the ml-100k ``u.genre`` order
  (0 unknown … 18 Western, the same ids for both layouts); a movie with more than 3 genres
  keeps the first 3 in that order, each with confidence 1 / (number of genres of the movie).
- every user → one ``users`` row: age bucket, gender, segment = occupation, country unknown.
- no ``engagements`` table: MovieLens has no on-platform events.
Malformed lines (wrong field count, non-integer id, unknown genre, rating of an unknown user
or movie…) are skipped and reported with file and line number.
"""

import datetime as dt
import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from schemas.arrow import OFFSITE_CONVERSION, PIN_PROFILE, TS, USER_PROFILE
from schemas.lake import table_dir
from towerline.core.contracts import MAX_INTERESTS_PER_PIN
from towerline.core.errors import InputError
from towerline.core.files import fsync_dir, fsync_tree
from towerline.importers import Malformed, read_delimited

GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Index = rating (0 unused). Higher ratings map to stronger conversion actions.
ACTION_BY_RATING = ("PAGE_VISIT", "PAGE_VISIT", "PAGE_VISIT", "SIGNUP", "ADD_TO_CART", "CHECKOUT")
# ml-1m occupation codes (README of ml-1m); ml-100k spells the occupation out.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
GENDERS = {"M": "MALE", "F": "FEMALE"}
# (file, separator) per layout; both are latin-1 (ml-100k u.item and ml-1m movies.dat are).
LAYOUTS = {
    "ml-100k": {"ratings": ("u.data", "\t"), "users": ("u.user", "|"), "movies": ("u.item", "|")},
    "ml-1m": {
        "ratings": ("ratings.dat", "::"),
        "users": ("users.dat", "::"),
        "movies": ("movies.dat", "::"),
    },
}


class MovieLensError(InputError):
    """The directory is not a MovieLens download this importer understands."""


@dataclass
class MovieLens:
    """Parsed, validated columns of one download."""

    layout: str
    user_ids: np.ndarray
    age_buckets: np.ndarray
    genders: np.ndarray
    segments: np.ndarray
    movie_ids: np.ndarray
    genres: np.ndarray  # [movies, len(GENRES)] bool
    rating_users: np.ndarray
    rating_movies: np.ndarray
    ratings: np.ndarray
    rating_ts: np.ndarray  # unix seconds
    malformed: list[Malformed] = field(default_factory=list)


def detect_layout(root: Path) -> str:
    for layout, files in LAYOUTS.items():
        if (root / files["ratings"][0]).is_file():
            return layout
    raise MovieLensError(
        f"{root} holds neither u.data (ml-100k) nor ratings.dat (ml-1m); "
        "download and unzip ml-100k.zip or ml-1m.zip from https://grouplens.org/datasets/movielens/"
    )


def _age_bucket(age: np.ndarray, layout: str) -> np.ndarray:
    # ml-1m ages are range codes (1 <18, 18, 25, 35, 45, 50 "50-55", 56 "56+"): code 50 goes to
    # 45-54. ml-100k ages are years; the same edges apply to both.
    edges = np.array([18, 25, 35, 45, 55 if layout == "ml-100k" else 56])
    names = np.array(
        ["AGE_UNDER_18", "AGE_18_24", "AGE_25_34", "AGE_35_44", "AGE_45_54", "AGE_55_PLUS"]
    )
    return np.where(age > 0, names[np.searchsorted(edges, age, side="right")], "AGE_UNKNOWN")


def _users(root: Path, layout: str, bad: list[Malformed]) -> tuple[np.ndarray, ...]:
    name, sep = LAYOUTS[layout]["users"]
    rows = read_delimited(root / name, sep, 5, bad)
    g, a, o = (2, 1, 3) if layout == "ml-100k" else (1, 2, 3)
    rows.reject(~np.isin(rows.text(g), list(GENDERS)), "gender must be M or F")
    rows.require_ints({0: "user id", a: "age"} | ({o: "occupation"} if layout == "ml-1m" else {}))
    if layout == "ml-1m":
        occ = rows.as_int(o)
        rows.reject((occ < 0) | (occ >= len(ML1M_OCCUPATIONS)), "occupation code not in 0..20")
    rows.dedup(0)
    gender = np.array([GENDERS[s] for s in rows.text(g)], dtype=object)
    names = np.asarray(ML1M_OCCUPATIONS, dtype=object)
    segment = names[rows.as_int(o)] if layout == "ml-1m" else rows.text(o)
    return rows.as_int(0), _age_bucket(rows.as_int(a), layout), gender, segment


def _movies(root: Path, layout: str, bad: list[Malformed]) -> tuple[np.ndarray, np.ndarray]:
    """Movie ids and their genre matrix [movies, len(GENRES)] (bool)."""
    name, sep = LAYOUTS[layout]["movies"]
    if layout == "ml-100k":
        rows = read_delimited(root / name, sep, 5 + len(GENRES), bad)
        flags = np.stack([rows.text(5 + i) for i in range(len(GENRES))], axis=1)
        rows.reject(~np.isin(flags, ["0", "1"]).all(axis=1), "genre flags must be 0 or 1")
    else:
        rows = read_delimited(root / name, sep, 3, bad)
        unknown = [any(g not in GENRES for g in s.split("|")) for s in rows.text(2)]
        rows.reject(np.array(unknown, dtype=bool), "unknown genre")
    rows.require_ints({0: "movie id"})
    rows.dedup(0)
    if layout == "ml-100k":
        matrix = np.stack([rows.text(5 + i) == "1" for i in range(len(GENRES))], axis=1)
    else:
        index = {g: i for i, g in enumerate(GENRES)}
        matrix = np.zeros((len(rows.line), len(GENRES)), dtype=bool)
        for r, genres in enumerate(s.split("|") for s in rows.text(2)):
            matrix[r, [index[g] for g in genres]] = True
    return rows.as_int(0), matrix.reshape(-1, len(GENRES))


def _ratings(root: Path, ml: MovieLens) -> None:
    """Fill the rating columns of ``ml``; ratings of unknown users or movies are reported."""
    name, sep = LAYOUTS[ml.layout]["ratings"]
    rows = read_delimited(root / name, sep, 4, ml.malformed)
    rows.require_ints({0: "user id", 1: "movie id", 2: "rating", 3: "timestamp"})
    rating = rows.as_int(2)
    rows.reject((rating < 1) | (rating > 5), "rating not in 1..5")
    rows.reject(rows.as_int(3) < 0, "negative timestamp")
    rows.reject(
        ~np.isin(rows.as_int(0), ml.user_ids), f"user not in {LAYOUTS[ml.layout]['users'][0]}"
    )
    rows.reject(
        ~np.isin(rows.as_int(1), ml.movie_ids), f"movie not in {LAYOUTS[ml.layout]['movies'][0]}"
    )
    ml.rating_users, ml.rating_movies = rows.as_int(0), rows.as_int(1)
    ml.ratings, ml.rating_ts = rows.as_int(2), rows.as_int(3)


def read_movielens(root: Path) -> MovieLens:
    """Parse and validate a download; nothing is written."""
    root = Path(root)
    layout = detect_layout(root)
    for name, _ in LAYOUTS[layout].values():
        if not (root / name).is_file():
            raise MovieLensError(f"{root} looks like {layout} but has no {name}")
    bad: list[Malformed] = []
    users = _users(root, layout, bad)
    movie_ids, genres = _movies(root, layout, bad)
    empty = np.zeros(0, np.int64)
    ml = MovieLens(layout, *users, movie_ids, genres, empty, empty, empty, empty, bad)
    _ratings(root, ml)
    return ml


def conversions_table(ml: MovieLens) -> pa.Table:
    """Ratings as OFFSITE_CONVERSION rows plus a ``dt`` (UTC day) column, oldest first.

    Ratings in the same second keep their file order, as the published SASRec preprocessing
    does: leave-one-out picks the last of tied events by that order, so it must not be an
    artefact such as movie id (ml-100k has 44% of last ratings tied with the one before)."""
    order = np.argsort(ml.rating_ts, kind="stable")
    users, movies = pa.array(ml.rating_users[order]), pa.array(ml.rating_movies[order])
    event_id = pc.binary_join_element_wise(
        ml.layout, pc.cast(users, pa.string()), pc.cast(movies, pa.string()), "-"
    )
    actions = pa.DictionaryArray.from_arrays(
        pa.array(ml.ratings[order].astype(np.int32)), pa.array(ACTION_BY_RATING)
    ).cast(pa.string())
    ts = pa.array(ml.rating_ts[order] * 1000, TS)
    table = pa.Table.from_arrays([event_id, users, movies, actions, ts], schema=OFFSITE_CONVERSION)
    # UTC day via integer division: formatting 1M timestamps one by one takes seconds.
    days, index = np.unique(ml.rating_ts[order] // 86_400, return_inverse=True)
    names = pa.array(days.astype("datetime64[D]").astype(str))
    return table.append_column("dt", pa.DictionaryArray.from_arrays(pa.array(index), names))


def pins_table(ml: MovieLens, updated: dt.datetime) -> pa.Table:
    ids, confs = [], []
    for row in ml.genres:
        genre_ids = np.flatnonzero(row)
        ids.append(genre_ids[:MAX_INTERESTS_PER_PIN].tolist())
        confs.append([1.0 / len(genre_ids)] * min(len(genre_ids), MAX_INTERESTS_PER_PIN))
    signature = [
        hashlib.blake2b(f"movielens:{m}".encode(), digest_size=8).hexdigest() for m in ml.movie_ids
    ]
    columns = [ml.movie_ids, ids, confs, signature, [updated] * len(ids)]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, PIN_PROFILE, strict=True)], schema=PIN_PROFILE
    )


def users_table(ml: MovieLens, updated: dt.datetime) -> pa.Table:
    n = len(ml.user_ids)
    columns = [ml.user_ids, ml.age_buckets, ml.genders, ["unknown"] * n, ml.segments, [updated] * n]
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, USER_PROFILE, strict=True)],
        schema=USER_PROFILE,
    )


@dataclass(frozen=True)
class ImportSummary:
    layout: str
    ratings: int
    users: int
    pins: int
    days: int
    first_dt: str
    last_dt: str
    seconds: float
    malformed: tuple[Malformed, ...]

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "malformed"}
        return out | {"malformed": len(self.malformed)}


WRITTEN_TABLES = ("offsite_conversions", "pins", "users")


def check_target(lake: Path, *, overwrite: bool) -> list[str]:
    """The tables of ``WRITTEN_TABLES`` that ``lake`` already holds; refused unless
    ``overwrite`` (a MovieLens lake mixed with another world would be meaningless)."""
    if lake.exists() and not lake.is_dir():
        raise MovieLensError(f"{lake} is a file, not a lake directory")
    existing = [t for t in WRITTEN_TABLES if table_dir(lake, t).exists()]
    if existing and not overwrite:
        raise MovieLensError(f"{lake} already holds {existing}; pass overwrite to replace them")
    return existing


def check_ratings(root: Path, ml: MovieLens) -> None:
    """An import without a single rating would swap in empty tables: refuse it instead."""
    if len(ml.ratings):
        return
    path = Path(root) / LAYOUTS[ml.layout]["ratings"][0]
    bad = [m for m in ml.malformed if m.file == path.name]
    if not bad:
        raise MovieLensError(f"{path} holds no ratings; nothing was imported")
    raise MovieLensError(
        f"{path}: none of its {len(bad):,} rating lines is valid (first: {bad[0]}); "
        "nothing was imported"
    )


def write_lake(ml: MovieLens, lake: Path, *, overwrite: bool = False) -> pa.Table:
    """Write offsite_conversions, pins and users; returns the conversions written.

    The tables are written into a staging directory inside ``lake`` (same filesystem) and
    then renamed into place, so a failed write leaves the lake as it was; ``overwrite``
    replaces exactly those three table directories (see ``check_target``)."""
    check_target(lake, overwrite=overwrite)
    lake.mkdir(parents=True, exist_ok=True)
    staging = lake / f".movielens-staging-{uuid.uuid4().hex[:12]}"
    try:
        events = _write_tables(ml, staging)
        fsync_tree(staging)
        swap_in(staging, lake, WRITTEN_TABLES)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return events


def _write_tables(ml: MovieLens, root: Path) -> pa.Table:
    # Profiles are stamped with the last rating time, not the wall clock: imports are repeatable.
    last = int(ml.rating_ts.max()) if len(ml.rating_ts) else 0
    updated = dt.datetime.fromtimestamp(last, dt.UTC)
    events = conversions_table(ml)
    ds.write_dataset(
        events,
        table_dir(root, "offsite_conversions"),
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("dt", pa.string())]), flavor="hive"),
        basename_template="movielens-{i}.parquet",
        existing_data_behavior="error",  # a fresh staging directory: nothing to overwrite
        use_threads=False,  # keeps rows in event-time order inside each file
    )
    for name, table in (("pins", pins_table(ml, updated)), ("users", users_table(ml, updated))):
        table_dir(root, name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, table_dir(root, name) / "movielens.parquet")
    return events


def swap_in(staging: Path, lake: Path, tables: tuple[str, ...]) -> None:
    """Rename ``staging/<table>`` onto ``lake/<table>`` for each table, keeping the old
    ones aside until every new one is in place; on any failure the old ones come back."""
    aside = staging / ".replaced"
    aside.mkdir()
    moved: list[str] = []  # old tables set aside
    placed: list[str] = []  # new tables renamed in
    try:
        for table in tables:
            if table_dir(lake, table).exists():
                os.rename(table_dir(lake, table), aside / table)
                moved.append(table)
        for table in tables:
            os.rename(table_dir(staging, table), table_dir(lake, table))
            placed.append(table)
    except BaseException:
        for table in placed:
            shutil.rmtree(table_dir(lake, table), ignore_errors=True)
        for table in moved:
            os.rename(aside / table, table_dir(lake, table))
        raise
    fsync_dir(lake)


def import_movielens(root: Path, lake: Path, *, overwrite: bool = False) -> ImportSummary:
    """Parse and validate the download in ``root``, then write it into ``lake``.

    Nothing in ``lake`` changes unless the download holds at least one valid rating and
    every table was written (see ``write_lake``)."""
    start = time.perf_counter()
    check_target(Path(lake), overwrite=overwrite)  # fail fast, before parsing 1M ratings
    ml = read_movielens(root)
    check_ratings(root, ml)
    events = write_lake(ml, Path(lake), overwrite=overwrite)
    days = events["dt"].combine_chunks().dictionary.to_pylist()
    return ImportSummary(
        layout=ml.layout,
        ratings=events.num_rows,
        users=len(ml.user_ids),
        pins=len(ml.movie_ids),
        days=len(days),
        first_dt=min(days, default=""),
        last_dt=max(days, default=""),
        seconds=round(time.perf_counter() - start, 2),
        malformed=tuple(ml.malformed),
    )
