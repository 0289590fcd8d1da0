"""The demo end to end: its own dev broker, real Feast (SQLite), real lake."""

import datetime as dt

from rich.console import Console

from towerline.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end_twice_in_the_same_workdir(tmp_path):
    cfg = DemoConfig(
        workdir=tmp_path / "demo",
        users=200,
        pins=400,
        days=3,
        # Yesterday, as the CLI does: the stream worker dead-letters events older than 7 days.
        end_date=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
    )
    console = Console(file=open(tmp_path / "out.txt", "w"), width=120)  # noqa: SIM115
    for _ in range(2):  # the second run must not trip over the first one's files
        summary = run_demo(cfg, console=console)
    replay = summary["replay"]
    assert replay["sent"] > 0 and replay["consumed"] == replay["sent"]
    assert replay["undecodable"] == 0
    assert sum(replay["by_action"].values()) == replay["sent"]
    assert summary["profiles"]["rows"] == {"user_profile": 200, "pin_profile": 400}
    assert summary["profiles"]["user_1"]["age_bucket"].startswith("AGE_")
    assert 1 <= len(summary["profiles"]["pin_1"]["interest_ids"]) <= 3
    assert not (cfg.workdir / "run" / "broker.json").exists(), "the demo must stop its broker"
    stream = replay["stream"]
    assert stream["caught_up"] and stream["applied"] == replay["sent"]
    batch = summary["batch"]
    assert batch["encoded_users"] == 200
    assert batch["serving"]["model_version"] == batch["version"] == batch["index"]["model_version"]
    assert batch["index"]["num_items"] > 0
