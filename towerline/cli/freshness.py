"""`towerline freshness`: the freshness monitor's commands (registered by towerline.cli).

``towerline freshness`` prints the table, ``check`` judges the SLOs for cron and CI,
``serve`` exposes every measure to Prometheus, ``report`` writes the HTML page. Every
command takes the same source options; this module only parses them and calls
``monitoring``.
"""

from __future__ import annotations

import functools
import inspect
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import ParameterSource

from towerline.cli import options as o

freshness_app = typer.Typer(
    help="Freshness of every feature view, the streams, the batch runs and the served index. "
    "Without a command: print the table (view / measure / value / target / status).",
)


def _hosts(value: str | None) -> tuple[str, ...]:
    return tuple(h.strip() for h in (value or "").split(",") if h.strip())


def _sources_options(
    ledger: o.Ledger = o.DEFAULT_LEDGER,
    lake: Annotated[
        Path | None, typer.Option(help="The Parquet lake (user_history_state partitions, users).")
    ] = None,  # fmt: skip
    registry: Annotated[
        Path | None, typer.Option(help="The model registry (REGISTRY/<model-name>/vN/).")
    ] = None,  # fmt: skip
    indexes: Annotated[
        Path | None, typer.Option(help="The index store holding serving.json.")
    ] = None,  # fmt: skip
    model_name: o.ModelName = o.DEFAULT_MODEL_NAME,
    repo: o.Repo = o.REPO_DEFAULT,
    online: o.Online = None,
    redis_url: o.RedisUrl = None,
    data_dir: o.DataDir = None,
    project: o.Project = None,
    bootstrap: o.Bootstrap = None,
    run_dir: o.RunDir = None,
    group: Annotated[
        str | None, typer.Option(help="The stream workers' consumer group (labels the lag).")
    ] = None,  # fmt: skip
    topic: Annotated[str, typer.Option(help="Topic of Avro Engagement records.")] = "engagements",
    state_namespace: Annotated[
        str, typer.Option(help="The stream workers' --state-namespace.")
    ] = "towerline:streams",  # fmt: skip
    serving_hosts: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT,...",
            help="Serving hosts whose /metrics name the version they serve.",
        ),
    ] = None,  # fmt: skip
    stream_metrics: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT,...",
            help="Stream workers' /metrics (pin_engagement's pipeline freshness).",
        ),
    ] = None,  # fmt: skip
    slos: Annotated[
        Path | None, typer.Option(help="The SLO file; default monitoring/slos.yml.")
    ] = None,  # fmt: skip
    sample: Annotated[int, typer.Option(min=1, help="Rows sampled per view.")] = 1000,
    history: Annotated[
        Path | None,
        typer.Option(
            help="History file appended on each run; default freshness_history.jsonl beside --ledger."
        ),
    ] = None,  # fmt: skip
) -> dict[str, Any]:
    return dict(locals())


_SHARED = inspect.signature(_sources_options).parameters


def _with_sources(command: Callable[..., None]) -> Callable[..., None]:
    """``command(opts, **own)`` as a typer command taking its own options and the shared ones."""
    own = [p for name, p in inspect.signature(command, eval_str=True).parameters.items() if name != "opts"]  # fmt: skip

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        shared = {name: kwargs.pop(name) for name in _SHARED}
        return command(_sources_options(**shared), **kwargs)

    shared = inspect.signature(_sources_options, eval_str=True).parameters.values()
    wrapper.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    del wrapper.__wrapped__  # typer must read the merged signature, not the original
    return wrapper


def _sources(opts: dict[str, Any]):
    from monitoring.collect import Sources

    bootstrap = opts["bootstrap"]
    try:
        bootstrap = o.bootstrap(bootstrap, opts["run_dir"])
    except o.BootstrapError:
        bootstrap = None  # no broker named and no dev broker: lag by offsets not measured
    store = o.feature_store(opts["repo"], opts["online"], opts["redis_url"], opts["data_dir"], opts["project"])  # fmt: skip
    return Sources(
        ledger=opts["ledger"],
        lake=opts["lake"],
        registry=opts["registry"],
        indexes=opts["indexes"],
        model_name=opts["model_name"],
        store=store,
        bootstrap=bootstrap,
        topic=opts["topic"],
        group=opts["group"],
        state_namespace=opts["state_namespace"],
        serving_hosts=_hosts(opts["serving_hosts"]),
        stream_metrics=_hosts(opts["stream_metrics"]),
        slos=opts["slos"],
        sample=opts["sample"],
    )


def _history_path(opts: dict[str, Any]) -> Path:
    from monitoring.history import HISTORY_FILE

    return opts["history"] or Path(opts["ledger"]).parent / HISTORY_FILE


def _collect(opts: dict[str, Any], *, keep: bool = True):
    """One collection, appended to the history file."""
    from monitoring import history
    from monitoring.collect import collect

    snapshot = collect(_sources(opts))
    if keep:
        history.append(_history_path(opts), snapshot)
    return snapshot


def _table(opts: dict[str, Any], ctx: typer.Context) -> None:
    """Print the table: view / measure / value / target / status, with sample sizes and
    unreachable sources under it. Subcommands: check, serve, report."""
    if ctx.invoked_subcommand is not None:
        given = [n for n in _SHARED if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
        if given:  # they would be silently ignored: each command takes its own
            flag = "--" + given[0].replace("_", "-")
            raise typer.BadParameter(
                f"put the options after the command: towerline freshness "
                f"{ctx.invoked_subcommand} {flag} ...",
                param_hint=flag,
            )
        return
    from monitoring.table import render_table

    typer.echo(render_table(_collect(opts)), nl=False)


def _table_callback(ctx: typer.Context, **kwargs: Any) -> None:
    _table(_sources_options(**kwargs), ctx)


_table_callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *inspect.signature(_sources_options, eval_str=True).parameters.values(),
    ]  # fmt: skip
)
_table_callback.__annotations__ = {p.name: p.annotation for p in _table_callback.__signature__.parameters.values()}  # type: ignore[attr-defined]  # fmt: skip
_table_callback.__doc__ = _table.__doc__
freshness_app.callback(invoke_without_command=True)(_table_callback)


@freshness_app.command("check")
@_with_sources
def check_cmd(opts: dict[str, Any]) -> None:
    """Judge every SLO: one line per breached SLO and exit 1; exit 0 when all hold; exit 2
    when a source cannot be reached (it is named), since the SLOs cannot all be judged."""
    from monitoring.collect import CannotMeasureError
    from monitoring.table import check_lines

    snapshot = _collect(opts)
    for line in check_lines(snapshot):
        typer.echo(line)
    if snapshot.unreachable:
        why = "; ".join(n for n in snapshot.notes if any(u.split(" ", 1)[-1] in n for u in snapshot.unreachable))  # fmt: skip
        raise CannotMeasureError(f"cannot measure: {', '.join(snapshot.unreachable)} unreachable" + (f" ({why})" if why else ""))  # fmt: skip
    if check_lines(snapshot):
        raise typer.Exit(1)


@freshness_app.command("serve")
@_with_sources
def serve_cmd(
    opts: dict[str, Any],
    port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Port of /metrics (not 9108, the stream worker's); 0: any free port.",
        ),
    ] = 9110,  # fmt: skip
    addr: Annotated[str, typer.Option(help="Address /metrics listens on.")] = "127.0.0.1",
    interval: Annotated[
        str, typer.Option(metavar="DURATION", help="Time between collections (e.g. 15s, 1m).")
    ] = "15s",  # fmt: skip
) -> None:
    """Serve every measure and SLO as Prometheus gauges on /metrics, re-collecting every
    --interval in the background (towerline_freshness_value, towerline_slo_ok, ...)."""
    from monitoring.collect import collect
    from monitoring.exporter import Exporter

    interval_s = o.parse_duration(interval, "--interval")
    sources = _sources(opts)
    exporter = Exporter(lambda: collect(sources), interval_s=interval_s)
    bound = exporter.start(port, addr)
    typer.echo(f"freshness monitor: http://{addr}:{bound}/metrics, every {interval}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        exporter.stop()


@freshness_app.command("report")
@_with_sources
def report_cmd(
    opts: dict[str, Any],
    out: Annotated[Path, typer.Option(help="The HTML file to write (self-contained).")] = Path(
        "report.html"
    ),  # fmt: skip
) -> None:
    """Collect, append to the history, and write one self-contained HTML page: SLO status,
    age histograms per view, lag over time per partition, index age and versions per host."""
    from monitoring import history
    from monitoring.report import render
    from towerline.core.files import write_text_atomic

    snapshot = _collect(opts)
    page = render(snapshot, history.read(_history_path(opts)))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    typer.echo(f"report written to {out}")
