"""The MovieLens importer on tiny hand-written files in both GroupLens layouts."""

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.arrow import OFFSITE_CONVERSION, PIN_PROFILE, USER_PROFILE
from schemas.lake import partitions, read_partition, read_table
from towerline.cli.importer import import_app
from towerline.core.contracts import AGE_BUCKETS, CONVERSION_ACTIONS, GENDERS
from towerline.importers import movielens
from towerline.importers.movielens import MovieLensError, import_movielens

FIXTURES = Path(__file__).parents[2] / "fixtures" / "movielens"
UTC = dt.UTC


def _events(lake: Path) -> list[dict]:
    days = partitions(lake, "offsite_conversions")
    rows = [r for d in days for r in read_partition(lake, "offsite_conversions", d).to_pylist()]
    for d in days:
        table = read_partition(lake, "offsite_conversions", d)
        assert table.schema.equals(OFFSITE_CONVERSION)
        assert {r["event_ts"].date() for r in table.to_pylist()} == {d}
    return rows


def _by_key(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


def test_ml100k_layout(tmp_path: Path) -> None:
    summary = import_movielens(FIXTURES / "ml-100k", tmp_path)
    assert (summary.layout, summary.ratings, summary.users, summary.pins) == ("ml-100k", 8, 3, 4)
    assert summary.malformed == ()
    events = _events(tmp_path)
    assert len(events) == 8 and all(e["action"] in CONVERSION_ACTIONS for e in events)
    # 881107199 is 1997-12-02 23:59:59 UTC, one second before the next day's partition.
    first = _by_key(events, "event_id")["ml-100k-1-1"]
    assert first["event_ts"] == dt.datetime(1997, 12, 2, 23, 59, 59, tzinfo=UTC)
    assert first["action"] == "CHECKOUT"
    assert _by_key(events, "event_id")["ml-100k-1-2"]["action"] == "ADD_TO_CART"
    assert _by_key(events, "event_id")["ml-100k-1-3"]["action"] == "SIGNUP"
    assert _by_key(events, "event_id")["ml-100k-1-4"]["action"] == "PAGE_VISIT"
    assert dt.date(1997, 12, 3) in partitions(tmp_path, "offsite_conversions")

    pins = read_table(tmp_path, "pins")
    assert pins.schema.equals(PIN_PROFILE)
    pin = _by_key(pins.to_pylist(), "pin_id")
    assert pin[1]["interest_ids"] == [3, 4, 5]  # Animation, Children's, Comedy
    assert pin[3]["interest_ids"] == [8, 17] and pin[3]["interest_confidences"] == [0.5, 0.5]
    # Space Jam has 5 genres: the first 3 in genre order are kept, each at 1/5.
    assert pin[4]["interest_ids"] == [2, 3, 4]
    assert pin[4]["interest_confidences"] == pytest.approx([0.2, 0.2, 0.2])
    assert len({p["image_signature"] for p in pin.values()}) == 4

    users = read_table(tmp_path, "users")
    assert users.schema.equals(USER_PROFILE)
    user = _by_key(users.to_pylist(), "user_id")
    assert (user[1]["age_bucket"], user[1]["gender"], user[1]["segment"]) == (
        "AGE_18_24",
        "MALE",
        "technician",
    )
    assert (user[2]["age_bucket"], user[2]["gender"]) == ("AGE_45_54", "FEMALE")
    assert user[3]["age_bucket"] == "AGE_UNDER_18"
    assert {u["country"] for u in user.values()} == {"unknown"}
    assert not (tmp_path / "engagements").exists()


def test_ml1m_layout(tmp_path: Path) -> None:
    summary = import_movielens(FIXTURES / "ml-1m", tmp_path)
    assert (summary.layout, summary.ratings, summary.users, summary.pins) == ("ml-1m", 7, 3, 4)
    events = _by_key(_events(tmp_path), "event_id")
    assert events["ml-1m-1-4"]["event_ts"] == dt.datetime(2001, 1, 1, 22, tzinfo=UTC)
    assert events["ml-1m-2-1"]["action"] == "PAGE_VISIT"
    pin = _by_key(read_table(tmp_path, "pins").to_pylist(), "pin_id")
    assert pin[2]["interest_ids"] == [2, 4, 9]  # Adventure, Children's, Fantasy
    # Listed out of order with 5 genres: sorted into genre order, then cut to 3.
    assert pin[4]["interest_ids"] == [2, 3, 4]
    assert pin[3]["interest_ids"] == [8, 12] and pin[3]["interest_confidences"] == [0.5, 0.5]
    user = _by_key(read_table(tmp_path, "users").to_pylist(), "user_id")
    assert (user[1]["age_bucket"], user[1]["gender"], user[1]["segment"]) == (
        "AGE_UNDER_18",
        "FEMALE",
        "K-12 student",
    )
    assert (user[2]["age_bucket"], user[2]["segment"]) == ("AGE_55_PLUS", "self-employed")
    assert user[3]["age_bucket"] == "AGE_45_54"  # code 50 means 50-55
    assert all(u["age_bucket"] in AGE_BUCKETS and u["gender"] in GENDERS for u in user.values())


def _broken_copy(tmp_path: Path, layout: str, file: str, extra: list[str]) -> Path:
    src = tmp_path / layout
    shutil.copytree(FIXTURES / layout, src)
    with (src / file).open("a", encoding="latin-1") as fh:
        fh.write("\n".join(extra) + "\n")
    return src


def test_malformed_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    # u.data has 8 good lines, so the appended ones are lines 9, 10, 11, 12 and 13.
    extra = ["1\t2\t3", "x\t1\t4\t881107200", "1\t1\t9\t881107200", "99\t1\t4\t881107200", ""]
    src = _broken_copy(tmp_path, "ml-100k", "u.data", extra + ["2\t2\t4\t881107200"])
    summary = import_movielens(src, tmp_path / "lake")
    found = {(m.file, m.line): m.reason for m in summary.malformed}
    assert set(found) == {("u.data", 9), ("u.data", 10), ("u.data", 11), ("u.data", 12)}
    assert "expected 4 fields" in found[("u.data", 9)]
    assert "user id is not an integer" in found[("u.data", 10)]
    assert "rating not in 1..5" in found[("u.data", 11)]
    assert "user not in u.user" in found[("u.data", 12)]
    assert summary.ratings == 9  # the blank line is skipped, the good line 14 is kept
    assert str(summary.malformed[0]).startswith("u.data:")


def test_malformed_ml1m_profiles(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "ml-1m", "movies.dat", ["5::Nope (1999)::Comedy|Opera"])
    with (src / "users.dat").open("a") as fh:
        fh.write("4::X::25::1::00000\n1::M::25::1::00000\n")
    summary = import_movielens(src, tmp_path / "lake")
    found = {(m.file, m.line): m.reason for m in summary.malformed}
    assert "unknown genre" in found[("movies.dat", 5)]
    assert "gender must be M or F" in found[("users.dat", 4)]
    assert "repeated id" in found[("users.dat", 5)]
    assert (summary.pins, summary.users) == (4, 3)


def test_refuses_unknown_directory_and_existing_lake(tmp_path: Path) -> None:
    with pytest.raises(MovieLensError, match="grouplens"):
        import_movielens(tmp_path, tmp_path / "lake")
    import_movielens(FIXTURES / "ml-1m", tmp_path / "lake")
    with pytest.raises(MovieLensError, match="already holds"):
        import_movielens(FIXTURES / "ml-100k", tmp_path / "lake")
    summary = import_movielens(FIXTURES / "ml-100k", tmp_path / "lake", overwrite=True)
    assert len(_events(tmp_path / "lake")) == summary.ratings == 8


def test_cli(tmp_path: Path) -> None:
    src = _broken_copy(tmp_path, "ml-100k", "u.user", ["4|x|M|doctor|1"])
    args = ["movielens", str(src), "--out", str(tmp_path / "lake")]
    result = CliRunner().invoke(import_app, args)
    assert result.exit_code == 0, result.output
    assert "malformed: u.user:4: age is not an integer" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["ratings"] == 8
    strict = CliRunner().invoke(import_app, [*args, "--overwrite", "--strict"])
    assert strict.exit_code == 1
    assert "--out" in CliRunner().invoke(import_app, ["movielens", "--help"]).output


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _with_ratings(tmp_path: Path, text: str) -> Path:
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "ml-100k", src)
    (src / "u.data").write_text(text, encoding="latin-1")
    return src


@pytest.mark.parametrize(
    ("ratings", "needle"),
    [("", "holds no ratings"), ("", "u.data"),
     ("x\t1\t5\t1\n1\t1\t9\t1\n1\t2\n", "none of its 3 rating lines is valid")],
)  # fmt: skip
def test_no_valid_rating_is_refused_and_the_lake_kept(tmp_path, ratings, needle) -> None:
    lake = tmp_path / "lake"
    import_movielens(FIXTURES / "ml-1m", lake)
    before = _snapshot(lake)
    with pytest.raises(MovieLensError, match=needle) as err:
        import_movielens(_with_ratings(tmp_path, ratings), lake, overwrite=True)
    assert err.value.exit_code == 2
    assert _snapshot(lake) == before
    assert sorted(p.name for p in lake.iterdir()) == ["offsite_conversions", "pins", "users"]


def test_a_failed_swap_puts_the_old_tables_back(tmp_path, monkeypatch) -> None:
    """The third table fails to move in: the two already swapped are rolled back."""
    lake = tmp_path / "lake"
    import_movielens(FIXTURES / "ml-1m", lake)
    before = _snapshot(lake)
    real_rename, renames = movielens.os.rename, []

    def flaky_rename(src, dst):
        renames.append(dst)
        if Path(dst) == lake / "users" and ".replaced" not in str(src):  # the new one only
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(movielens.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="No space"):
        import_movielens(FIXTURES / "ml-100k", lake, overwrite=True)
    assert lake / "users" in [Path(d) for d in renames]
    assert _snapshot(lake) == before
    assert sorted(p.name for p in lake.iterdir()) == ["offsite_conversions", "pins", "users"]


def test_a_file_is_no_lake(tmp_path: Path) -> None:
    (tmp_path / "lake").write_text("")
    with pytest.raises(MovieLensError, match="is a file"):
        import_movielens(FIXTURES / "ml-100k", tmp_path / "lake")
