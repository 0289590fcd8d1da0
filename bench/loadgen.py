"""An open-loop HTTP/1.1 load generator (stdlib only), run as its own process by the benches.

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:8000 --path /v1/retrieve \\
        --body '{"user_id": $USER, "subject_pin_id": $PIN, "k": 100}' --users 100000 \\
        --pins 1000000 --rate 300 --duration 10 --warmup 2

Requests leave on a fixed schedule (request i at start + i / rate) whether or not earlier
ones were answered, over ``--connections`` keep-alive connections (a request waits for a
free connection when all are busy; that wait counts). Latency is measured from the
*scheduled* send time to the last byte of the answer, so queueing anywhere (server, socket,
this process falling behind) shows up instead of being hidden (no coordinated omission).
``$USER`` / ``$PIN`` in the body are replaced by uniform random ids in 1..users / 1..pins.

A non-2xx status, a broken connection, a timeout or (with ``--expect S --expect-count N``)
an answer with fewer than N occurrences of S counts as an error. Prints ONE JSON object:
latency percentiles (ms) of the measured requests (after ``--warmup`` s), error counts and
samples, the achieved rate, how late this process sent (``send_lag_*``: its own share of
the latency) and its CPU seconds. ``--raw FILE`` also writes every measured latency
(seconds, one per line) so a caller can merge segments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from urllib.parse import urlsplit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="http://host:port")
    p.add_argument("--path", required=True)
    p.add_argument("--body", default="", help="JSON body; $USER and $PIN are substituted")
    p.add_argument("--method", default="POST", choices=("POST", "GET"))
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--pins", type=int, default=1)
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--duration", type=float, required=True, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not measured")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before an error")
    p.add_argument("--expect", default=None, help="substring every answer must hold")
    p.add_argument("--expect-count", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", default=None, help="write measured latencies (s) here")
    return p.parse_args(argv)


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after any failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            payload = b"".join(p[:-2] for p in parts)
        else:
            payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in [0, 100])."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), -(-len(sorted_values) * q // 100)))
    return sorted_values[int(rank) - 1]


async def run(args: argparse.Namespace) -> dict:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    rng = random.Random(args.seed)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(Connection(host, port))
    prefix = (
        f"{args.method} {args.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + ("Content-Type: application/json\r\n" if args.method == "POST" else "")
        + "Accept: application/json\r\n"
    ).encode()
    expect = args.expect.encode() if args.expect else None
    total = int(round(args.rate * (args.warmup + args.duration)))
    measured_from = int(round(args.rate * args.warmup))
    latencies: list[float] = []
    lags: list[float] = []
    sends: list[float] = []
    errors: dict[str, int] = {}
    samples: list[str] = []
    loop = asyncio.get_running_loop()

    def failed(kind: str, detail: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if len(samples) < 5:
            samples.append(f"{kind}: {detail[:200]}")

    async def one(i: int, scheduled: float, body: bytes) -> None:
        conn = await pool.get()
        sent = loop.time()
        head = prefix + (
            b"Content-Length: %d\r\n\r\n" % len(body) if args.method == "POST" else b"\r\n"
        )
        try:
            status, payload = await asyncio.wait_for(conn.request(head, body), args.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            pool.put_nowait(conn)
            if i >= measured_from:
                failed(type(exc).__name__, str(exc))
            return
        pool.put_nowait(conn)
        done = loop.time()
        if i < measured_from:
            return
        if not 200 <= status < 300:
            failed(f"http_{status}", payload.decode(errors="replace"))
        elif expect is not None and payload.count(expect) < args.expect_count:
            failed("short_answer", payload.decode(errors="replace"))
        latencies.append(done - scheduled)
        lags.append(sent - scheduled)
        sends.append(sent)

    template = args.body
    tasks: set[asyncio.Task] = set()
    cpu0 = time.process_time()
    start = loop.time() + 0.05
    for i in range(total):
        scheduled = start + i / args.rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        body = template.replace("$USER", str(rng.randint(1, args.users)))
        body = body.replace("$PIN", str(rng.randint(1, args.pins))).encode()
        task = loop.create_task(one(i, scheduled, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=args.timeout + 5)
    for task in list(tasks):
        task.cancel()
        failed("unfinished", "no answer before the generator stopped")
    cpu = time.process_time() - cpu0
    while not pool.empty():
        pool.get_nowait().close()
    latencies.sort()
    lags.sort()
    ms = lambda s: None if s is None else round(s * 1000, 3)  # noqa: E731
    n_measured = total - measured_from
    return {
        "path": args.path,
        "rate": args.rate,
        "requests": n_measured,
        "answered": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_samples": samples,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "p999_ms": ms(percentile(latencies, 99.9)),
        "max_ms": ms(latencies[-1] if latencies else None),
        "mean_ms": ms(sum(latencies) / len(latencies)) if latencies else None,
        "achieved_rate": round((len(sends) - 1) / (max(sends) - min(sends)), 1)
        if len(sends) > 1 and max(sends) > min(sends)
        else None,
        "send_lag_p50_ms": ms(percentile(lags, 50)),
        "send_lag_p99_ms": ms(percentile(lags, 99)),
        "loadgen_cpu_s": round(cpu, 3),
        "connections": args.connections,
        "_latencies": latencies,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    latencies = result.pop("_latencies")
    if args.raw:
        with open(args.raw, "w") as handle:
            handle.write("\n".join(repr(v) for v in latencies))
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
