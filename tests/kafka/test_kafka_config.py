"""Which cluster a command talks to: flag, then environment, then the dev broker."""

from pathlib import Path

import pytest

from towerline.kafka_config import (
    DEFAULT_RUN_DIR,
    ENV_BOOTSTRAP,
    ENV_RUN_DIR,
    BootstrapError,
    ConsumerSettings,
    ProducerSettings,
    resolve_bootstrap,
    run_dir_from,
)

pytestmark = pytest.mark.kafka


def test_flag_beats_env_beats_dev_broker(kafka_broker) -> None:
    run_dir = kafka_broker.run_dir
    env = {ENV_BOOTSTRAP: "kafka-env:9092"}
    assert resolve_bootstrap("kafka-flag:9092", env, run_dir) == "kafka-flag:9092"
    assert resolve_bootstrap(None, env, run_dir) == "kafka-env:9092"
    assert resolve_bootstrap(None, {}, run_dir) == kafka_broker.bootstrap
    assert resolve_bootstrap("", {ENV_BOOTSTRAP: "  "}, run_dir) == kafka_broker.bootstrap


def test_nothing_configured_says_how_to_fix_it(tmp_path) -> None:
    with pytest.raises(BootstrapError, match="towerline dev up") as err:
        resolve_bootstrap(None, {}, tmp_path)
    assert "--bootstrap-servers" in str(err.value) and ENV_BOOTSTRAP in str(err.value)


def test_run_dir_from_flag_env_default() -> None:
    assert run_dir_from(Path("/x"), {ENV_RUN_DIR: "/y"}) == Path("/x")
    assert run_dir_from(None, {ENV_RUN_DIR: "/y"}) == Path("/y")
    assert run_dir_from(None, {}) == DEFAULT_RUN_DIR


def test_settings_are_kafka_python_kwargs() -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = ProducerSettings().kwargs("h:1")
    consumer = ConsumerSettings(group_id="g").kwargs("h:1")
    assert producer["acks"] == "all" and consumer["enable_auto_commit"] is False
    assert set(producer) <= set(KafkaProducer.DEFAULT_CONFIG)
    assert set(consumer) <= set(KafkaConsumer.DEFAULT_CONFIG)
