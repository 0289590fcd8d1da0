"""The serving corpus job on the DirectRunner, against hand-computed numbers and real files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import typer
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from typer.testing import CliRunner

from batch.corpus import CORPUS_FILE, MAP_FILE, resolve_snapshot, run_corpus
from batch.corpus_steps import BuildCorpus, CorpusConfig, CorpusError, decayed_scores
from schemas.arrow import ENGAGEMENT, PIN_PROFILE
from schemas.lake import LakeError
from towerline.cli.batch_index import batch_corpus_cmd
from towerline.world import WorldConfig, generate

DAY = dt.date(2025, 6, 30)
T_END = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)  # the end of DAY
H = 2.0  # half-life, days


def at(days_before_end: float) -> dt.datetime:
    return T_END - dt.timedelta(days=days_before_end)


# (pin, action, time): expected decayed sums with weights CLOSEUP 1, CLICK 2, SAVE 4, SHARE 4.
EVENTS = [
    (1, "CLICK", at(2)),  # 2 * 2^-1 = 1.0
    (1, "SAVE", at(4)),  # 4 * 2^-2 = 1.0
    (2, "CLOSEUP", at(1)),  # 1 * 2^-0.5
    (2, "SHARE", at(0)),  # at T_end: after the window, ignored
    (2, "CLICK", at(90.5)),  # before the 90-day window, ignored
    (3, "CLOSEUP", at(0.5)),  # 2^-0.25
    (3, "LIKE", at(0.5)),  # unknown action, counted and ignored
    (10, "SAVE", at(1)),  # 10, 11, 12 share signature "dup"; 11 is the most engaged
    (11, "SAVE", at(0)),  # ignored (at T_end)
    (11, "SHARE", at(0.25)),
    (12, "CLOSEUP", at(3)),
    (20, "CLICK", at(1)),  # 20 and 21 tie on signature "tie": the smaller id wins
    (21, "CLICK", at(1)),
]
EXPECTED = {
    1: 2.0,
    2: 2**-0.5,
    3: 2**-0.25,
    10: 4 * 2**-0.5,
    11: 4 * 2**-0.125,
    12: 2**-1.5,
    20: 2 * 2**-0.5,
    21: 2 * 2**-0.5,
}
SIGNATURES = {
    1: "a",
    2: "b",
    3: "c",
    10: "dup",
    11: "dup",
    12: "dup",
    20: "tie",
    21: "tie",
    99: "z",
}


def engagement_table(events=EVENTS) -> pa.Table:
    rows = [
        {"event_id": f"e{i}", "user_id": 7, "pin_id": p, "action": a, "event_ts": ts}
        for i, (p, a, ts) in enumerate(events)
    ]
    return pa.Table.from_pylist(rows, schema=ENGAGEMENT)


def pins_table(signatures=SIGNATURES) -> pa.Table:
    rows = [
        {
            "pin_id": p,
            "interest_ids": [p % 5, 7],
            "interest_confidences": [0.75, 0.25],
            "image_signature": s,
            "updated_ts": at(30),
        }
        for p, s in signatures.items()
    ]
    # An older profile row of pin 1 with another signature: the newest row must win.
    rows.append({**rows[0], "image_signature": "old", "updated_ts": at(60)})
    return pa.Table.from_pylist(rows, schema=PIN_PROFILE)


def write_lake(root: Path, events=EVENTS) -> Path:
    """Engagements split over two dt partitions (two files), and the pins table."""
    table = engagement_table(events)
    for i, day in enumerate(("2025-06-29", "2025-06-30")):
        part = root / "engagements" / f"dt={day}"
        part.mkdir(parents=True)
        pq.write_table(table.slice(i * 7, 7), part / "part-0.parquet")
    (root / "pins").mkdir(parents=True)
    pq.write_table(pins_table(), root / "pins" / "part-0.parquet")
    return root


def test_decay_matches_hand_computed_sums() -> None:
    pins, scores, counts = decayed_scores(engagement_table(), CorpusConfig(DAY, H))
    assert dict(zip(pins.tolist(), scores.tolist(), strict=True)) == pytest.approx(EXPECTED)
    assert counts == {"events": len(EVENTS), "in_window": 9, "unknown_action": 1}


def test_action_weights_are_configurable() -> None:
    cfg = CorpusConfig(DAY, H, weights=(("CLICK", 1.0),))  # only clicks count
    pins, scores, _ = decayed_scores(engagement_table(), cfg)
    assert dict(zip(pins.tolist(), scores.tolist(), strict=True)) == pytest.approx(
        {1: 0.5, 20: 2**-0.5, 21: 2**-0.5}
    )
    with pytest.raises(CorpusError, match="unknown actions"):
        CorpusConfig(DAY, H, weights=(("LIKE", 1.0),))


def test_build_corpus_transform_dedups_by_signature() -> None:
    """The composite transform alone, on TestPipeline with in-memory record batches."""
    events = engagement_table()
    with BeamTestPipeline() as p:
        engagements = p | "Events" >> beam.Create([events.slice(0, 5), events.slice(5)])
        pins = p | "Pins" >> beam.Create([pins_table()])
        top = (engagements, pins) | BuildCorpus(CorpusConfig(DAY, H, top_m=4, shards=3))
        rows = top | beam.FlatMap(
            lambda t: [
                (r["pin_id"], r["image_signature"], round(r["score"], 9), r["pin_ids"])
                for r in t.to_pylist()
            ]
        )
        assert_that(
            rows,
            equal_to(
                [
                    (11, "dup", round(EXPECTED[11], 9), [11, 10, 12]),  # most engaged of 3
                    (1, "a", 2.0, [1]),  # the newest profile row gave the signature
                    (20, "tie", round(EXPECTED[20], 9), [20, 21]),  # tie: smaller pin id
                    (3, "c", round(EXPECTED[3], 9), [3]),
                ]
            ),
        )


def test_run_corpus_publishes_a_snapshot(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    cfg = CorpusConfig(DAY, H, top_m=10, shards=2)
    manifest = run_corpus(lake, cfg, out=tmp_path / "out")
    snap = Path(manifest["path"])
    assert snap.parent == tmp_path / "out" / "corpus"
    assert snap.name.startswith("corpus-20250630-") and manifest["snapshot_id"] == snap.name
    latest = json.loads((snap.parent / "latest").read_text())
    assert latest["snapshot_id"] == snap.name
    corpus = pq.read_table(snap / CORPUS_FILE).to_pylist()
    assert [r["pin_id"] for r in corpus] == [11, 1, 20, 3, 2]
    assert [r["rank"] for r in corpus] == [1, 2, 3, 4, 5]
    assert {r["pin_id"]: r["score"] for r in corpus} == pytest.approx(
        {p: EXPECTED[p] for p in (11, 1, 20, 3, 2)}
    )
    assert corpus[0]["group_size"] == 3 and corpus[0]["interest_ids"] == [1, 7]
    mapping = {r["image_signature"]: r for r in pq.read_table(snap / MAP_FILE).to_pylist()}
    assert mapping["dup"]["canonical_pin_id"] == 11 and mapping["dup"]["pin_ids"] == [11, 10, 12]
    assert mapping["tie"]["canonical_pin_id"] == 20
    assert manifest["counts"]["unknown_action"] == 1 and manifest["counts"]["engaged_pins"] == 8
    # Same lake and parameters -> the same snapshot id; resolvable from the out directory.
    assert run_corpus(lake, cfg, out=tmp_path / "out")["snapshot_id"] == snap.name
    assert resolve_snapshot(tmp_path / "out")[0] == snap
    assert {p.name for p in (tmp_path / "out" / "corpus").iterdir()} == {snap.name, "latest"}


def test_resolve_snapshot_refuses_a_modified_file(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    snap = Path(run_corpus(lake, CorpusConfig(DAY, H, top_m=3))["path"])
    pq.write_table(pq.read_table(snap / CORPUS_FILE).slice(0, 1), snap / CORPUS_FILE)
    with pytest.raises(CorpusError, match="does not match its sha256"):
        resolve_snapshot(snap)


def test_window_without_engagements_is_refused(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    with pytest.raises(CorpusError, match="no engagements partitions"):
        run_corpus(lake, CorpusConfig(dt.date(2025, 1, 31), H))
    unknown = write_lake(tmp_path / "unknown", events=[(500, "SAVE", at(1))] * 8)
    with pytest.raises(CorpusError, match="empty corpus"):  # events only on unknown pins
        run_corpus(unknown, CorpusConfig(DAY, H))
    assert not list((unknown / "corpus").glob(".staging-*"))


def test_generated_world_matches_an_independent_computation(tmp_path: Path) -> None:
    """On the synthetic world (with near-duplicate pins): the job equals pandas."""
    lake = tmp_path / "world"
    generate(WorldConfig(users=300, pins=2000, days=10, seed=3, end_date=DAY), lake, progress=False)
    manifest = run_corpus(lake, CorpusConfig(DAY, 3.0, top_m=500, shards=4))
    got = pq.read_table(Path(manifest["path"]) / CORPUS_FILE).to_pandas()

    events = ds.dataset(lake / "engagements", format="parquet").to_table().to_pandas()
    weight = events["action"].map(dict(CorpusConfig(DAY, 3.0).weights))
    age = (pd.Timestamp(T_END) - events["event_ts"]).dt.total_seconds() / 86400
    events["score"] = weight * np.exp2(-age / 3.0)
    pins = pq.read_table(lake / "pins").to_pandas().set_index("pin_id")["image_signature"]
    scores = events.groupby("pin_id")["score"].sum().rename("score").to_frame().join(pins)
    ranked = scores.reset_index().sort_values(
        ["image_signature", "score", "pin_id"], ascending=[True, False, True]
    )
    want = ranked.drop_duplicates("image_signature").sort_values(
        ["score", "pin_id"], ascending=[False, True]
    )
    assert got["pin_id"].tolist() == want["pin_id"].head(500).tolist()
    assert np.allclose(got["score"], want["score"].head(500), rtol=1e-12)
    assert got["image_signature"].is_unique and (got["group_size"] > 1).any()


def test_cli_takes_pipeline_options_after_double_dash(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    app = typer.Typer()
    app.command("corpus")(batch_corpus_cmd)
    app.command("noop")(lambda: None)  # two commands: the command name is then required
    args = ["corpus", "--lake", str(lake), "--dt", "2025-06-30", "--half-life", "2d"]
    args += ["--top-m", "2", "--weights", "share=0", "--", "--runner=DirectRunner"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout.strip().splitlines()[-1])
    assert manifest["num_items"] == 2 and manifest["weights"]["SHARE"] == 0.0
    bad = CliRunner().invoke(app, [*args[:7], "--weights", "CLICK"])
    assert bad.exit_code == 2 and "ACTION=WEIGHT" in bad.output


def test_a_bad_input_file_is_named_and_no_output_directory_appears(tmp_path: Path) -> None:
    lake = write_lake(tmp_path / "lake")
    bad = sorted((lake / "engagements").rglob("*.parquet"))[-1]
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(LakeError, match="not a readable Parquet file") as err:
        run_corpus(lake, CorpusConfig(DAY, H, top_m=3), out=tmp_path / "out")
    assert str(bad) in str(err.value) and err.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    pq.write_table(pa.table({"pin_id": ["a"], "action": ["SAVE"]}), bad)
    with pytest.raises(LakeError, match="column 'pin_id' is string, the engagements table"):
        run_corpus(lake, CorpusConfig(DAY, H, top_m=3))
    assert not (lake / "corpus").exists()
    other = write_lake(tmp_path / "other")  # good engagements, pins without a column
    pins = other / "pins" / "part-0.parquet"
    pq.write_table(pins_table().drop_columns(["image_signature"]), pins)
    with pytest.raises(LakeError, match="no column 'image_signature'"):
        run_corpus(other, CorpusConfig(DAY, H, top_m=3))
    assert not (other / "corpus").exists()
