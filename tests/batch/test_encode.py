"""The daily encode job on the DirectRunner with real files and a real Feast (SQLite).

Fixtures (tests/batch/conftest.py): a 120-user world ending 2025-06-30, a registry with two
tiny untrained versions (max_len 12), a private lake copy and Feast store per test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from pathlib import Path

import apache_beam as beam
import feast
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import typer

# Aliased so pytest does not try to collect Beam's class as a test class.
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from typer.testing import CliRunner

from batch import encode_job
from batch import encode_ops as ops
from batch import encode_output as out
from batch.encode import EncodeUsers, offsite_globs, pipeline_options
from batch.encode_job import EncodeConfig, resolve_spec, run_encode
from model.artifacts import TwoTower, load_encoder
from model.config import ModelConfig
from model.encode_fast import encode_states, supports_fast_path
from model.features import EncoderInputs, build_encoder_inputs, sequence_events
from model.lake_io import Window, read_events, read_pins
from schemas.lake import LakeError, partitions, read_partition
from towerline.cli.batch_encode import batch_encode_cmd
from towerline.cli.options import BEAM_CONTEXT
from towerline.core.contracts import CONVERSION_ACTIONS, USER_HISTORY_STATE, VIEW_FEATURES

END = dt.date(2025, 6, 30)
PREVIOUS = END - dt.timedelta(days=1)
IN_MEMORY = ["--runner=DirectRunner"]  # one in-process worker: fast, deterministic
HIDDEN_REF = "user_history_state:hidden"


# Short local names for the conftest's encode_* fixtures (local: they do not leak).
@pytest.fixture
def registry(encode_registry: Path) -> Path:
    return encode_registry


@pytest.fixture
def lake(encode_lake: Path) -> Path:
    return encode_lake


@pytest.fixture
def store(encode_store: feast.FeatureStore) -> feast.FeatureStore:
    return encode_store


def reference_states(lake: Path, registry: Path, version: str, day: dt.date) -> dict:
    """user_id -> (hidden (d,), history_len, newest event ms) the model's own way: its lake
    reader, its feature builder and one plain forward pass, no Beam."""
    encoder = load_encoder(registry, version)
    first = partitions(lake, "offsite_conversions")[0]
    log = read_events(lake, "offsite_conversions", Window(first, day), CONVERSION_ACTIONS)
    users, starts, ends = log.user_bounds()
    inputs = build_encoder_inputs(
        sequence_events(log, read_pins(lake)), starts, ends, encoder.cfg.max_len
    )
    with torch.inference_mode():
        hidden = encoder(**inputs.tensors()).numpy()
    last_ms = log.ts[ends - 1] * 1000
    rows = zip(users, hidden, inputs.lengths, last_ms, strict=True)
    return {int(u): (h, int(n), int(t)) for u, h, n, t in rows}


def config(lake: Path, registry: Path, day: dt.date = END, **kwargs) -> EncodeConfig:
    return EncodeConfig(lake=lake, day=day, registry=registry, shards=3, progress=False, **kwargs)


def offline(lake: Path, day: dt.date) -> pa.Table:
    return read_partition(lake, "user_history_state", day).sort_by("user_id")


def online(store: feast.FeatureStore, version: str, users: list[int]) -> dict:
    rows = [{"user_id": u, "model_version": version} for u in users]
    return store.get_online_features(
        features=[
            HIDDEN_REF,
            "user_history_state:history_len",
            "user_history_state:last_event_ts_ms",
        ],
        entity_rows=rows,
    ).to_dict(include_event_timestamps=True)


FEATURES = len(VIEW_FEATURES[USER_HISTORY_STATE])


def online_table_counts(feast_dir: Path) -> tuple[int, int]:
    """(distinct entity keys, rows) of the SQLite table of user_history_state (one row per
    key and feature)."""
    with sqlite3.connect(feast_dir / "online.db") as db:
        (name,) = db.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE '%user_history_state%'"
        ).fetchone()
        return db.execute(f'SELECT COUNT(DISTINCT entity_key), COUNT(*) FROM "{name}"').fetchone()


def hidden_files(lake: Path) -> list[str]:
    return sorted(p.name for p in (lake / "user_history_state").iterdir() if p.name[0] == ".")


def test_split_by_shard_partitions_rows_and_keeps_users_together(encode_world: Path) -> None:
    table = ops.compact_events(pq.read_table(offsite_globs(encode_world, END)[0][:-9]))
    parts = list(ops.split_by_shard(table, 5))
    assert sum(part.num_rows for _, part in parts) == table.num_rows
    owners: dict[int, int] = {}
    for shard, part in parts:
        for user in set(part["user_id"].to_pylist()):
            assert owners.setdefault(user, shard) == shard
    codes = table["action"].to_numpy()
    assert codes.min() >= 1 and codes.max() <= len(CONVERSION_ACTIONS)


@pytest.mark.parametrize("spilled", [False, True], ids=["in_memory_shuffle", "spilled_shuffle"])
def test_encode_users_transform_matches_the_plain_encoder(
    encode_world: Path, registry: Path, tmp_path: Path, spilled: bool
) -> None:
    spec = resolve_spec(config(encode_world, registry, version="v1"))
    if spilled:
        spec = dataclasses.replace(spec, spill=str(tmp_path))
    tables = [
        pq.read_table(glob[: -len("*.parquet")], columns=ops.EVENT_COLUMNS)
        for glob in offsite_globs(encode_world, END)
    ]
    expected = reference_states(encode_world, registry, "v1", END)

    def matches(elements: list[tuple[int, pa.Table]]) -> None:
        rows = pa.concat_tables([t for _, t in elements]).sort_by("user_id").to_pylist()
        if [r["user_id"] for r in rows] != sorted(expected):
            raise BeamAssertException("not exactly one state per user")
        for row in rows:
            hidden, length, newest = expected[row["user_id"]]
            same = row["history_len"] == length and row["last_event_ts_ms"] == newest
            if not same or not np.allclose(row["hidden"], hidden, atol=1e-5):
                raise BeamAssertException(f"user {row['user_id']} differs from the reference")

    with BeamTestPipeline(argv=IN_MEMORY) as p:
        states = p | beam.Create(tables) | EncodeUsers(spec, shards=4)
        assert_that(states, matches)
    lengths = [n for _, n, _ in expected.values()]
    assert max(lengths) == spec.max_len and min(lengths) < spec.max_len  # the cut is exercised
    # The spilled shuffle wrote one file per input table; the in-memory one none.
    assert len(list(tmp_path.glob("*.arrow"))) == (len(tables) if spilled else 0)


def test_encode_writes_one_row_per_user_and_version_offline_and_online(
    lake: Path, registry: Path, store: feast.FeatureStore, encode_feast_dir: Path
) -> None:
    summary = run_encode(config(lake, registry, version="v1"), IN_MEMORY, store)
    expected = reference_states(lake, registry, "v1", END)
    rows = offline(lake, END)
    assert summary["rows"] == summary["online_rows"] == rows.num_rows == len(expected)
    assert rows["user_id"].to_pylist() == sorted(expected)
    assert set(rows["model_version"].to_pylist()) == {"v1"}
    end_ms = int(dt.datetime(2025, 7, 1, tzinfo=dt.UTC).timestamp() * 1000)
    assert set(rows["event_timestamp"].cast(pa.int64()).to_pylist()) == {end_ms}
    assert online_table_counts(encode_feast_dir) == (len(expected), FEATURES * len(expected))
    users = rows["user_id"].to_pylist()
    got = online(store, "v1", users)
    assert np.allclose(np.array(got["hidden"]), np.stack(rows["hidden"].to_numpy(False)))
    assert got["history_len"] == rows["history_len"].to_pylist()
    # The request gap's start: each user's newest event, offline and online.
    newest = [expected[u][2] for u in users]
    assert got["last_event_ts_ms"] == rows["last_event_ts_ms"].to_pylist() == newest
    assert len(set(newest)) > 1
    assert hidden_files(lake) == [".lock-dt=2025-06-30-v1"]


def test_rerun_is_idempotent_across_direct_runner_modes(
    lake: Path, registry: Path, store: feast.FeatureStore, encode_feast_dir: Path
) -> None:
    run_encode(config(lake, registry), IN_MEMORY, store)
    first = offline(lake, END)
    files = sorted(p.name for p in (lake / "user_history_state/dt=2025-06-30/v2").iterdir())
    run_encode(config(lake, registry), None, store)  # default: 2 processes; "latest" = v2
    assert offline(lake, END).equals(first)
    again = sorted(p.name for p in (lake / "user_history_state/dt=2025-06-30/v2").iterdir())
    assert again == files
    assert online_table_counts(encode_feast_dir) == (first.num_rows, FEATURES * first.num_rows)
    got = online(store, "v2", first["user_id"].to_pylist())
    assert np.allclose(np.array(got["hidden"]), np.stack(first["hidden"].to_numpy(False)))


def test_injected_failure_leaves_yesterday_and_online_as_they_were(
    lake: Path, registry: Path, store: feast.FeatureStore
) -> None:
    run_encode(config(lake, registry, PREVIOUS, version="v1"), IN_MEMORY, store)
    before = {p: p.read_bytes() for p in (lake / "user_history_state").rglob("*.parquet")}
    users = offline(lake, PREVIOUS)["user_id"].to_pylist()
    online_before = online(store, "v1", users)
    failing = config(lake, registry, END, version="v1", fail_after_shards=1)
    with pytest.raises(Exception, match="injected failure after 1 shards"):
        run_encode(failing, IN_MEMORY, store)
    after = {p: p.read_bytes() for p in (lake / "user_history_state").rglob("*.parquet")}
    assert after == before  # nothing published for END, yesterday byte for byte
    assert partitions(lake, "user_history_state") == [PREVIOUS]
    assert online(store, "v1", users) == online_before
    assert hidden_files(lake) == [".lock-dt=2025-06-29-v1", ".lock-dt=2025-06-30-v1"]
    run_encode(config(lake, registry, END, version="v1"), IN_MEMORY, store)  # the retry
    assert partitions(lake, "user_history_state") == [PREVIOUS, END]
    assert offline(lake, END).num_rows >= len(users)


def test_failed_rerun_keeps_the_published_rows_of_that_day(lake: Path, registry: Path) -> None:
    run_encode(config(lake, registry, version="v1"), IN_MEMORY, store=None)
    published = offline(lake, END)
    other_clock = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    failing = config(lake, registry, version="v1", event_time=other_clock, fail_after_shards=2)
    with pytest.raises(Exception, match="injected failure"):
        run_encode(failing, IN_MEMORY, store=None)
    assert offline(lake, END).equals(published)


def test_versions_of_one_day_live_side_by_side(lake: Path, registry: Path) -> None:
    run_encode(config(lake, registry, version="v1"), IN_MEMORY, store=None)
    v1 = offline(lake, END)
    run_encode(config(lake, registry, version="v2"), IN_MEMORY, store=None)
    both = offline(lake, END)
    assert both.num_rows == 2 * v1.num_rows
    kept = both.filter(pa.compute.equal(both["model_version"], "v1")).sort_by("user_id")
    assert kept.equals(v1)


def test_recover_restores_an_output_caught_between_the_two_renames(tmp_path: Path) -> None:
    paths = out.OutputPaths.of(tmp_path, END, "v1")
    paths.retired.mkdir(parents=True)
    (paths.retired / "part-00000.parquet").write_bytes(b"previous")
    (paths.staging).mkdir()
    out.recover(paths)
    assert (paths.final / "part-00000.parquet").read_bytes() == b"previous"
    assert not paths.retired.exists() and not any(paths.staging.iterdir())


def test_backfill_does_not_overwrite_fresher_online_states(
    lake: Path, registry: Path, store: feast.FeatureStore
) -> None:
    run_encode(config(lake, registry, version="v1"), IN_MEMORY, store)
    summary = run_encode(config(lake, registry, PREVIOUS, version="v1"), IN_MEMORY, store)
    assert summary["online"] == "skipped: dt=2025-06-30 is newer"
    assert summary["rows"] > 0 and summary["online_rows"] == 0


def test_cli_passes_pipeline_options_after_the_double_dash(lake: Path, registry: Path) -> None:
    app = typer.Typer()
    app.command("encode", context_settings=BEAM_CONTEXT)(batch_encode_cmd)
    app.command("noop")(lambda: None)  # two commands: `encode` stays a subcommand
    args = ["encode", "--lake", str(lake), "--dt", "2025-06-30", "--registry", str(registry)]
    args += ["--shards", "2", "--online", "none", "--no-progress", "--", *IN_MEMORY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # progress is on stderr
    assert summary["model_version"] == "v2" and summary["rows"] == offline(lake, END).num_rows
    assert "--direct_running_mode" in CliRunner().invoke(app, ["encode", "--help"]).output


def test_verify_staging_refuses_a_user_twice_or_a_wrong_count(tmp_path: Path) -> None:
    encoded = ops.EncodedUsers(
        np.array([1, 2]), np.zeros((2, 4), np.float32), np.array([3, 1]), np.array([5, 9])
    )
    states = ops.states_table(encoded, "v1", 0)
    out.write_part(tmp_path, 0, states)
    assert out.verify_staging(tmp_path, 2) == 2
    with pytest.raises(out.EncodeOutputError, match="pipeline encoded 3"):
        out.verify_staging(tmp_path, 3)
    out.write_part(tmp_path, 1, states.slice(1))
    with pytest.raises(out.EncodeOutputError, match="user twice"):
        out.verify_staging(tmp_path, None)


def test_feast_point_in_time_reads_the_published_days(
    lake: Path, registry: Path, store: feast.FeatureStore
) -> None:
    """Feast's offline store reads dt=DATE/<version>/ and dates each state at the end of
    its day: a query during END sees PREVIOUS's state, one after END sees END's."""
    for day in (PREVIOUS, END):
        run_encode(config(lake, registry, day, version="v1"), IN_MEMORY, store=None)
    active = read_partition(lake, "offsite_conversions", END)["user_id"].to_pylist()
    users = sorted(set(active))[:3]  # their states differ between the two days
    by_day = {day: offline(lake, day).to_pandas().set_index("user_id") for day in (PREVIOUS, END)}
    old, new = (by_day[day].loc[users[0], "hidden"] for day in (PREVIOUS, END))
    assert not np.allclose(old, new)
    for asked, day in [(dt.datetime(2025, 6, 30, 6), PREVIOUS), (dt.datetime(2025, 7, 1, 6), END)]:
        entities = pd.DataFrame(
            {
                "user_id": users,
                "model_version": ["v1"] * len(users),
                "event_timestamp": [pd.Timestamp(asked, tz="UTC")] * len(users),
            }
        )
        got = store.get_historical_features(entity_df=entities, features=[HIDDEN_REF]).to_df()
        got = got.set_index("user_id").loc[users, "hidden"]
        want = by_day[day].loc[users, "hidden"]
        assert all(np.allclose(g, w) for g, w in zip(got, want, strict=True))


def test_a_run_that_lost_events_publishes_nothing(
    lake: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that drops elements (multi_threading did) fails the run instead."""
    real = encode_job.run_pipeline

    def lossy(*args, **kwargs) -> dict[str, int]:
        counts = real(*args, **kwargs)
        return {**counts, "events": counts["events"] - 1}

    monkeypatch.setattr(encode_job, "run_pipeline", lossy)
    with pytest.raises(out.EncodeOutputError, match="offsite events; not publishing"):
        run_encode(config(lake, registry), IN_MEMORY, store=None)
    assert partitions(lake, "user_history_state") == []


def test_multi_threading_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="multi_threading loses elements"):
        pipeline_options(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])


def test_published_states_record_the_model_that_wrote_them(lake: Path, registry: Path) -> None:
    summary = run_encode(config(lake, registry, version="v1"), IN_MEMORY, store=None)
    final = lake / "user_history_state/dt=2025-06-30/v1"
    manifest = json.loads((final / out.STATE_MANIFEST).read_text())
    encoder_sha = json.loads((registry / "two_tower/v1/manifest.json").read_text())["files"]
    assert manifest == {
        "model_name": "two_tower",
        "model_version": "v1",
        "dt": "2025-06-30",
        "rows": summary["rows"],
        "encoder_sha256": encoder_sha["encoder.pt"],
    }
    assert offline(lake, END).num_rows == summary["rows"]  # readers skip the manifest
    # States are keyed by version only: another model's day is never replaced.
    (final / out.STATE_MANIFEST).write_text(json.dumps({**manifest, "model_name": "other"}))
    before = {p: p.read_bytes() for p in final.iterdir()}
    with pytest.raises(out.EncodeOutputError, match="states of model 'other', not 'two_tower'"):
        run_encode(config(lake, registry, version="v1"), IN_MEMORY, store=None)
    assert {p: p.read_bytes() for p in final.iterdir()} == before


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "not a readable Parquet file"),
        (
            lambda path: pq.write_table(pa.table({"user_id": ["1"], "pin_id": [2]}), path),
            "column 'user_id' is string, the offsite_conversions table needs int64",
        ),
        (
            lambda path: pq.write_table(pa.table({"user_id": [1], "pin_id": [2]}), path),
            "no column 'action'",
        ),
    ],
)
def test_a_bad_offsite_file_is_named_before_anything_is_written(
    lake: Path, registry: Path, damage, needle: str
) -> None:
    bad = sorted((lake / "offsite_conversions/dt=2025-06-29").glob("*.parquet"))[0]
    damage(bad)
    with pytest.raises(LakeError, match=needle) as err:
        run_encode(config(lake, registry, version="v1"), IN_MEMORY, store=None)
    assert str(bad) in str(err.value) and err.value.exit_code == 2
    assert not (lake / "user_history_state").exists()  # no lock, no staging, nothing


def random_inputs(cfg: ModelConfig, lengths: list[int], width: int, seed: int) -> EncoderInputs:
    """A right-padded batch of raw lake-like values, padding zeroed as the feature
    builder leaves it (lengths 0 = users without history)."""
    rng = np.random.default_rng(seed)
    b = len(lengths)
    valid = np.arange(width)[None, :] < np.array(lengths)[:, None]
    interests = rng.integers(-2, cfg.interest_vocab + 5, (b, width, 3))  # unknown, out of range
    return EncoderInputs(
        pin_ids=np.where(valid, rng.integers(0, 10**9, (b, width)), 0),
        interest_ids=np.where(valid[..., None], interests, 0),
        interest_conf=np.where(valid[..., None], rng.random((b, width, 3)), 0).astype(np.float32),
        actions=np.where(valid, rng.integers(0, cfg.num_actions, (b, width)), 0),
        log_gaps=np.where(valid, rng.random((b, width)) * 8, 0).astype(np.float32),
        lengths=np.array(lengths, np.int64),
    )


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fast_path_states_equal_the_encoders_forward(layers: int) -> None:
    """model.encode_fast skips the last layer's work after the last event; the states
    must still be forward's, on padded rows, full rows and empty histories alike."""
    cfg = ModelConfig(pin_buckets=4096, interest_vocab=50, layers=layers)
    encoder = TwoTower.build(cfg, seed=layers).encoder.eval()
    with torch.no_grad():  # larger weights than the init: peaked, not uniform, attention
        for param in encoder.layers.parameters():
            param.mul_(3.0)
        encoder.empty.normal_()
    assert supports_fast_path(encoder)
    for width, lengths in [
        (cfg.max_len, [cfg.max_len, 0, 1, 7, cfg.max_len - 1, 0, 33, 2]),
        (5, [5, 3, 0, 1]),
        (1, [1, 0]),
        (4, [0, 0, 0]),
    ]:
        inputs = random_inputs(cfg, lengths, width, seed=width).tensors()
        with torch.inference_mode():
            expected = encoder(**inputs)
        got = encode_states(encoder, **inputs)
        assert got.shape == expected.shape == (len(lengths), cfg.d_model)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        empty = np.array(lengths) == 0
        assert torch.equal(got[torch.from_numpy(empty)], encoder.empty.expand(empty.sum(), -1))


def test_fast_path_is_refused_for_a_training_encoder() -> None:
    encoder = TwoTower.build(ModelConfig(pin_buckets=64, interest_vocab=8)).encoder
    assert not supports_fast_path(encoder.train())
    assert supports_fast_path(encoder.eval())


def test_spill_by_shard_writes_one_file_and_reads_back_the_split(
    encode_world: Path, tmp_path: Path
) -> None:
    table = ops.compact_events(pq.read_table(offsite_globs(encode_world, END)[0][:-9]))
    spilled = list(ops.spill_by_shard(table, 5, str(tmp_path)))
    in_memory = list(ops.split_by_shard(table, 5))
    assert [shard for shard, _ in spilled] == [shard for shard, _ in in_memory]
    assert len(list(tmp_path.iterdir())) == 1  # one IPC file per input table
    for (_, part), (_, rows) in zip(spilled, in_memory, strict=True):
        (back,) = ops.load_parts([part])
        assert part.rows == back.num_rows and back.equals(rows)
    assert list(ops.spill_by_shard(table.slice(0, 0), 5, str(tmp_path))) == []


def test_published_states_equal_the_plain_forward_and_no_spill_is_left(
    lake: Path, registry: Path
) -> None:
    """The job (spilled shuffle, fast encoder, 2 worker processes) publishes the states
    that one plain ``SequenceEncoder.forward`` over the model's own reader computes."""
    run_encode(config(lake, registry, version="v1"), None, store=None)
    expected = reference_states(lake, registry, "v1", END)
    rows = offline(lake, END)
    assert rows["user_id"].to_pylist() == sorted(expected)
    hidden = np.stack(rows["hidden"].to_numpy(zero_copy_only=False))
    want = np.stack([expected[u][0] for u in rows["user_id"].to_pylist()])
    np.testing.assert_allclose(hidden, want, atol=1e-5, rtol=0)
    assert rows["history_len"].to_pylist() == [expected[u][1] for u in sorted(expected)]
    assert hidden_files(lake) == [".lock-dt=2025-06-30-v1"]  # the spill directory is gone
