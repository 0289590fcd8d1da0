import numpy as np

from model.features import (
    build_encoder_inputs,
    history_index,
    log_gaps,
    realtime_sequence,
    sequence_events,
)
from model.tables import EventLog, PinTable, encode_demographics
from towerline.core.contracts import PAD_INTEREST, UNKNOWN_INTEREST


def _log(rows):
    user, pin, ts = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    return EventLog.from_arrays(user, pin, np.ones_like(user), ts)


def test_event_log_sorts_by_user_then_time_keeping_tie_order():
    log = _log([(2, 20, 5), (1, 11, 9), (1, 10, 3), (2, 21, 5)])
    assert log.user.tolist() == [1, 1, 2, 2]
    assert log.pin.tolist() == [10, 11, 20, 21]
    assert log.user_starts().tolist() == [0, 0, 2, 2]


def test_history_index_is_strictly_earlier_in_time_and_same_user():
    log = _log([(1, 10, 1), (1, 11, 2), (1, 12, 2), (1, 13, 5), (2, 20, 7), (2, 21, 7)])
    # events at the same second are not each other's history
    assert history_index(log).tolist() == [-1, 0, 0, 2, -1, -1]
    daily = _log([(1, 10, 100), (1, 11, 86_400 + 5), (1, 12, 86_400 + 9), (1, 13, 2 * 86_400)])
    assert history_index(daily, 86_400).tolist() == [-1, 0, 0, 2]
    # resolution 0: the log's own order, so a same-second event that arrived first counts
    assert history_index(log, 0).tolist() == [-1, 0, 1, 2, -1, 4]


def test_log_gaps_are_between_consecutive_events_of_a_user():
    log = _log([(1, 10, 0), (1, 11, 3600), (2, 20, 100)])
    assert np.allclose(log_gaps(log), [0.0, np.log(2.0), 0.0])


def _pins():
    return PinTable(
        np.array([10, 11, 12]),
        np.array([[1, 2, PAD_INTEREST], [3, PAD_INTEREST, PAD_INTEREST], [4, 5, 6]]),
        np.array([[0.9, 0.1, 0], [1, 0, 0], [0.5, 0.3, 0.2]], dtype=np.float32),
    )


def test_pin_lookup_gives_unknown_bucket_to_missing_pins():
    ids, conf = _pins().lookup(np.array([[11, 99]]))
    assert ids.shape == (1, 2, 3)
    assert ids[0, 0].tolist() == [3, PAD_INTEREST, PAD_INTEREST]
    assert ids[0, 1].tolist() == [UNKNOWN_INTEREST, PAD_INTEREST, PAD_INTEREST]
    assert conf[0, 1].tolist() == [1.0, 0.0, 0.0]
    catalog = _pins().with_pins(np.array([99, 10]))
    assert catalog.pin_id.tolist() == [10, 11, 12, 99]


def test_encoder_inputs_keep_the_last_l_events_right_padded():
    log = _log([(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 10, 4), (2, 11, 9)])
    events = sequence_events(log, _pins())
    inputs = build_encoder_inputs(events, np.array([0, 4, 0]), np.array([4, 5, 0]), max_len=3)
    assert inputs.lengths.tolist() == [3, 1, 0]
    assert inputs.pin_ids.tolist() == [[11, 12, 10], [11, 0, 0], [0, 0, 0]]
    assert inputs.interest_ids[0, 0].tolist() == [3, PAD_INTEREST, PAD_INTEREST]
    assert inputs.interest_ids[1, 1].tolist() == [0, 0, 0]  # padding is zeroed
    fixed = build_encoder_inputs(events, np.array([0]), np.array([2]), max_len=3, width=3)
    assert fixed.pin_ids.shape == (1, 3)
    tensors = inputs.tensors()
    assert set(tensors) == {
        "pin_ids",
        "interest_ids",
        "interest_conf",
        "actions",
        "log_gaps",
        "lengths",
    }


def test_realtime_sequence_uses_only_engagements_strictly_before_the_query():
    eng = _log([(1, 50, 10), (1, 51, 20), (1, 52, 30), (3, 70, 5)])
    pins, mask = realtime_sequence(
        eng, np.array([1, 1, 2, 3, 1]), np.array([30, 31, 100, 5, 0]), n=2
    )
    assert pins.tolist() == [[50, 51], [51, 52], [0, 0], [0, 0], [0, 0]]
    assert mask.tolist() == [
        [True, True],
        [True, True],
        [False, False],
        [False, False],
        [False, False],
    ]
    empty = EventLog.from_arrays(*(np.zeros(0, np.int64),) * 4)
    assert realtime_sequence(empty, np.array([1]), np.array([1]), 3)[1].sum() == 0


def test_demographics_codes_are_stable_and_unknown_is_zero():
    codes = encode_demographics(
        ["AGE_18_24", "nope"], ["FEMALE", "x"], ["US", "US"], ["a", "b"], 64, 32
    )
    assert codes.shape == (2, 4)
    assert codes[1, :2].tolist() == [0, 0]
    assert codes[0, 2] == codes[1, 2] and 1 <= codes[0, 2] < 64
    again = encode_demographics(["AGE_18_24"], ["FEMALE"], ["US"], ["a"], 64, 32)
    assert again[0].tolist() == codes[0].tolist()
