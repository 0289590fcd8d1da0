import numpy as np
import pytest

from model.batches import (
    epoch_batches,
    epoch_windows,
    log_sampling_prob,
    make_batch,
    make_source,
    pseudo_context,
    seen_pairs,
)
from model.config import ModelConfig
from model.evaluate import evaluate_targets
from model.lake_io import load_lake
from model.protocol import popularity_scores
from towerline.core.contracts import PAD_INTEREST


@pytest.fixture(scope="module")
def source(tiny_lake):
    data = load_lake(tiny_lake)
    cfg = ModelConfig.for_data(len(data.catalog), data.catalog.max_interest_id, max_len=8)
    return make_source(data.offsite, data.catalog, data.engagements, data.users, cfg)


def _epoch(source, seed=0, batch_targets=300, pseudo="positive"):
    rng = np.random.default_rng(seed)
    windows = epoch_windows(source, rng)
    log_q = log_sampling_prob(source.log.pin)
    batches = epoch_batches(windows, rng, batch_targets)
    return windows, batches, [make_batch(source, windows, b, log_q, pseudo) for b in batches]


def test_an_epoch_visits_every_event_once_as_a_target(source):
    windows, batches, made = _epoch(source)
    assert (windows.end - windows.start).max() <= source.cfg.max_len
    sizes = [len(b.pins) for b in made]
    assert sum(sizes) == len(source.log)
    assert max(sizes) < 300 + source.cfg.max_len  # about batch_targets each
    targets = np.concatenate(
        [np.arange(windows.tgt_lo[w], windows.tgt_hi[w]) for b in batches for w in b]
    )
    assert np.array_equal(np.sort(targets), np.arange(len(source.log)))


def test_history_of_every_target_is_strictly_before_it(source):
    assert source.cfg.history_cutoff == "log"  # the default: earlier in the log's order
    windows, batches, made = _epoch(source, seed=1)
    log = source.log
    for ids, batch in zip(batches, made, strict=True):
        tgt = np.concatenate([np.arange(windows.tgt_lo[w], windows.tgt_hi[w]) for w in ids])
        rows, pos = batch.rows.numpy(), batch.positions.numpy()
        start = windows.start[ids][rows]
        assert np.array_equal(batch.pins.numpy(), log.pin[tgt])
        has = pos >= 0
        # the state read is the one after the user's previous event in the log ...
        assert np.array_equal(start[has] + pos[has], source.src[tgt][has])
        assert np.array_equal(source.src[tgt][has], tgt[has] - 1)
        assert (log.ts[start[has] + pos[has]] <= log.ts[tgt][has]).all()
        assert (log.user[start[has]] == log.user[tgt][has]).all()
        # ... and causal attention sees nothing after it: the next event is the target
        assert (~has == (source.starts[tgt] == tgt)).all()
        rt = batch.context["realtime_mask"].numpy()
        assert rt.shape == (len(tgt), source.cfg.realtime_len)


def test_pseudo_context_modes(tiny_lake):
    data = load_lake(tiny_lake)
    cfg = ModelConfig.for_data(
        len(data.catalog), data.catalog.max_interest_id, max_len=8, subject_pin="previous"
    )
    source = make_source(data.offsite, data.catalog, data.engagements, data.users, cfg)
    tgt = np.arange(len(source.log))
    rng = np.random.default_rng(0)
    ids, _ = pseudo_context(source, tgt, "positive", rng)
    assert np.array_equal(ids, source.seq.interest_ids[tgt])
    prev, _ = pseudo_context(source, tgt, "previous", rng)
    has = source.prev >= 0
    assert np.array_equal(prev[has], source.seq.interest_ids[source.prev[has]])
    assert (prev[~has] == PAD_INTEREST).all()


def test_subject_pin_is_the_newest_engagement_strictly_before_the_target(tiny_lake, source):
    """The lake has engagements, so "auto" takes the subject pin from them."""
    assert source.subject_rule == "engagement"
    eng, log = load_lake(tiny_lake).engagements, source.log
    checked = 0
    for k in np.random.default_rng(1).choice(len(log), 200, replace=False):
        before = np.flatnonzero((eng.user == log.user[k]) & (eng.ts < log.ts[k]))
        if len(before) == 0:
            assert (source.subject_ids[k] == PAD_INTEREST).all()
            assert (source.subject_conf[k] == 0).all()
            continue
        newest = before[eng.ts[before] == eng.ts[before].max()][-1]
        ids, conf = source.catalog.lookup(eng.pin[newest : newest + 1])
        assert np.array_equal(source.subject_ids[k], ids[0])
        assert np.allclose(source.subject_conf[k], conf[0])
        checked += 1
    assert checked > 50


def test_day_cutoff_keeps_the_history_state_before_the_targets_day(tiny_lake):
    data = load_lake(tiny_lake)
    cfg = ModelConfig.for_data(
        len(data.catalog), data.catalog.max_interest_id, history_cutoff="day"
    )
    day = make_source(data.offsite, data.catalog, data.engagements, data.users, cfg)
    log, has = day.log, day.src >= 0
    assert (log.ts[day.src[has]] // 86400 < log.ts[has] // 86400).all()
    assert (day.src <= day.prev).all()  # the subject pin stays the most recent one
    assert (day.src < day.prev).any()
    windows, batches, made = _epoch(day, seed=2)
    assert sum(len(b.pins) for b in made) == len(log)


def test_epochs_are_deterministic_for_a_seed(source):
    a = _epoch(source, seed=3)[2][0]
    b = _epoch(source, seed=3)[2][0]
    assert np.array_equal(a.pins.numpy(), b.pins.numpy())
    assert np.array_equal(a.encoder["pin_ids"].numpy(), b.encoder["pin_ids"].numpy())


def test_evaluation_of_no_targets_gives_zero_metrics(source):
    popularity = popularity_scores(np.zeros(3, np.int64), len(source.catalog))
    result = evaluate_targets(None, source, np.zeros(0, np.int64), popularity)
    assert result == {
        "popularity": {
            "recall@10": 0.0,
            "ndcg@10": 0.0,
            "recall@50": 0.0,
            "ndcg@50": 0.0,
            "mrr@10": 0.0,
        }
    }


def test_seen_pairs_are_each_targets_earlier_pins_in_its_users_log(source):
    """What the full softmax leaves out (``TrainConfig.mask_seen``): exactly the catalogue
    columns of the user's events before the target, as evaluation excludes them, never
    the target's own column."""
    columns, _ = source.catalog.index_of(source.log.pin)
    tgt = np.random.default_rng(0).choice(len(source.log), size=40, replace=False)
    rows, cols = (t.numpy() for t in seen_pairs(source.starts, columns, tgt))
    for row, t in enumerate(tgt):
        earlier = set(columns[source.starts[t] : t].tolist()) - {columns[t]}
        got = cols[rows == row]
        assert set(got.tolist()) == earlier
        assert len(got) == np.isin(columns[source.starts[t] : t], list(earlier)).sum()
    assert (source.log.user[source.starts[tgt]] == source.log.user[tgt]).all()
    assert len(rows) > 0
