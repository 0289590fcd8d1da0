"""The option vocabulary: which cluster a command talks to, durations, dates, names."""

import datetime as dt
from pathlib import Path

import pytest
import typer

from towerline.cli import options as o
from towerline.core.kafka import ConsumerSettings, ProducerSettings


@pytest.mark.kafka
def test_flag_beats_dev_broker(kafka_broker) -> None:
    run_dir = kafka_broker.run_dir
    assert o.bootstrap("kafka-flag:9092", run_dir) == "kafka-flag:9092"
    assert o.bootstrap(None, run_dir) == kafka_broker.bootstrap
    assert o.bootstrap("  ", run_dir) == kafka_broker.bootstrap


def test_nothing_configured_says_how_to_fix_it(tmp_path) -> None:
    with pytest.raises(o.BootstrapError, match="towerline dev up") as err:
        o.bootstrap(None, tmp_path)
    assert "--bootstrap-servers" in str(err.value) and o.ENV_BOOTSTRAP in str(err.value)
    assert err.value.exit_code == 1


def test_run_dir_flag_or_default() -> None:
    assert o.run_dir(Path("/x")) == Path("/x")
    assert o.run_dir(None) == o.DEFAULT_RUN_DIR


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("12h", 43_200.0), ("1d", 86_400.0),
     ("250ms", 0.25), ("1.5h", 5_400.0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert o.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-1s", "0s", "0", "nan"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="positive duration"):
        o.parse_duration(text, "--half-life")


def test_dates() -> None:
    assert o.parse_date("2025-06-30") == dt.date(2025, 6, 30)
    with pytest.raises(typer.BadParameter, match="2025-13-45"):
        o.parse_date("2025-13-45", "--end-date")


def test_settings_are_kafka_python_kwargs() -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = ProducerSettings().kwargs("h:1")
    consumer = ConsumerSettings(group_id="g").kwargs("h:1")
    assert producer["acks"] == "all" and consumer["enable_auto_commit"] is False
    assert set(producer) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert set(consumer) <= set(KafkaConsumer.DEFAULT_CONFIG)
