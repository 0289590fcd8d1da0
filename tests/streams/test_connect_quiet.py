"""Kafka clients opened on overlapping threads leave kafka-python's logging as it was."""

import logging

from streams.connect import _quiet


def test_overlapping_quiet_blocks_restore_the_level_once_the_last_one_ends() -> None:
    logger = logging.getLogger("towerline-test-quiet")
    logger.setLevel(logging.INFO)
    first, second = _quiet(logger.name), _quiet(logger.name)
    first.__enter__()
    second.__enter__()  # another thread opens a client meanwhile
    first.__exit__(None, None, None)
    assert logger.level == logging.CRITICAL  # the second is still connecting: still quiet
    second.__exit__(None, None, None)
    assert logger.level == logging.INFO  # a run's reconnect messages are not lost
