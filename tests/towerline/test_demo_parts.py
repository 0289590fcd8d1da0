"""The demo's parts that need no broker: its workdir rule and where library output goes."""

import logging
import subprocess
import sys
import warnings

import pytest

from towerline.core.errors import RefusedError
from towerline.demo.logs import library_logs
from towerline.demo.summary import epoch_line
from towerline.demo.workdir import MARKER, RUN_OUTPUTS, claim_workdir


def _say_everything(terminal) -> None:
    """One of each kind of output a library makes during the demo."""
    logging.getLogger("kafka.net.connection").error("Connection lost: 111 ECONNREFUSED")
    logging.getLogger("apache_beam.options").warning("Discarding unparseable args")
    warnings.warn("read_text is gone soon", DeprecationWarning, stacklevel=1)
    print("raw stderr from a library", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from a worker\\n')"])
    print("demo line", file=terminal, flush=True)


LIBRARY = ("ECONNREFUSED", "Discarding", "read_text is gone", "raw stderr", "from a worker")


def test_library_output_goes_to_the_log_not_the_terminal(tmp_path, capfd) -> None:
    log = tmp_path / "towerline.log"
    with library_logs(log) as terminal:
        _say_everything(terminal)
    out, err = capfd.readouterr()
    assert out == "demo line\n" and err == ""
    text = log.read_text()
    for needle in LIBRARY:
        assert needle in text
    assert "DeprecationWarning" in text and "demo line" not in text
    # Everything is restored afterwards.
    print("after", flush=True)
    assert capfd.readouterr().out == "after\n"


def test_verbose_also_shows_the_logs_live(tmp_path, capfd) -> None:
    log = tmp_path / "towerline.log"
    with library_logs(log, verbose=True) as terminal:
        _say_everything(terminal)
    out, err = capfd.readouterr()
    assert "demo line" in out
    for needle in LIBRARY:
        assert needle in err
    assert "ECONNREFUSED" in log.read_text()


def test_a_foreign_workdir_is_refused_and_left_alone(tmp_path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "precious.parquet").write_bytes(b"x")
    with pytest.raises(RefusedError, match="--force") as err:
        claim_workdir(tmp_path)
    assert err.value.exit_code == 1 and str(tmp_path) in str(err.value)
    assert (tmp_path / "lake" / "precious.parquet").exists()
    assert not (tmp_path / MARKER).exists()


def test_force_takes_a_foreign_workdir_and_marks_it(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "lake").mkdir()
    claim_workdir(tmp_path, force=True)
    assert (tmp_path / MARKER).is_file() and not (tmp_path / "lake").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run outputs go
    (tmp_path / "lake").mkdir()
    claim_workdir(tmp_path)  # marked: no force needed any more


def test_a_new_or_empty_workdir_is_created_and_marked(tmp_path) -> None:
    claim_workdir(tmp_path / "new" / "demo")
    assert (tmp_path / "new" / "demo" / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    claim_workdir(tmp_path / "empty")
    assert [p.name for p in (tmp_path / "empty").iterdir()] == [MARKER]


def test_the_demo_clears_only_its_previous_outputs(tmp_path) -> None:
    claim_workdir(tmp_path)
    for name in (*RUN_OUTPUTS, "run"):
        (tmp_path / name).mkdir()
    claim_workdir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MARKER, "run"])


def test_a_file_is_no_workdir(tmp_path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(RefusedError, match="is a file"):
        claim_workdir(tmp_path / "f", force=True)


def test_one_line_per_epoch() -> None:
    assert epoch_line({"epoch": 2, "loss": 5.62519, "seconds": 0.61}) == (
        "  epoch 2: loss 5.6252 (0.6s)"
    )
