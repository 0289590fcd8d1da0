import json

import typer
from typer.testing import CliRunner

from towerline.cli.model import evaluate_cmd, train_cmd


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    return app


def test_train_then_evaluate_prints_json_last(tiny_lake, tmp_path):
    runner, app = CliRunner(), _app()
    args = ["train", "--lake", str(tiny_lake), "--out", str(tmp_path), "--until", "2025-06-30"]
    args += ["--holdout", "leave-one-out", "--epochs", "1", "--dim", "16", "--max-len", "10"]
    trained = runner.invoke(app, [*args, "--no-progress", "--batch-size", "512"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output.strip().splitlines()[-1])
    assert summary["model_version"] == "v1" and summary["end"] == "2025-06-30"
    evaluated = runner.invoke(
        app,
        [
            "evaluate",
            "--lake",
            str(tiny_lake),
            "--registry",
            str(tmp_path),
            "--version",
            "v1",
            "--k",
            "10,50",
            "--json",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.output.strip().splitlines()[-1])
    for name in ("with_context", "no_context", "popularity"):
        assert set(result[name]) == {"recall@10", "recall@50", "ndcg@10", "ndcg@50", "mrr@10"}
    assert result["users"] == 300 and result["pins"] == 400 and result["model_version"] == "v1"
    assert result["seen_target"] == "miss"
    ranked = runner.invoke(
        app,
        [
            "evaluate",
            "--lake",
            str(tiny_lake),
            "--registry",
            str(tmp_path),
            "--json",
            "--seen-target",
            "rank",
        ],
    )
    assert ranked.exit_code == 0, ranked.output
    ranked_result = json.loads(ranked.output.strip().splitlines()[-1])
    # ranking repeats instead of counting them as misses can only raise recall
    assert ranked_result["with_context"]["recall@50"] >= result["with_context"]["recall@50"]


def test_bad_arguments_are_rejected_with_help(tiny_lake, tmp_path):
    runner, app = CliRunner(), _app()
    bad = runner.invoke(
        app, ["train", "--lake", str(tiny_lake), "--out", str(tmp_path), "--holdout", "x"]
    )
    assert bad.exit_code != 0 and "holdout" in bad.output
    bad_k = runner.invoke(
        app, ["evaluate", "--lake", str(tiny_lake), "--registry", str(tmp_path), "--k", "a"]
    )
    assert bad_k.exit_code != 0
    helped = runner.invoke(app, ["evaluate", "--help"])
    assert "leave-one-out" in helped.output.lower() and "--json" in helped.output
