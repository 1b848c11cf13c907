"""The asyncio load client for what wrk cannot measure: streams and the replayed trace.

Run as a child process of the bench (so its CPU is counted like wrk's):
``python -m aigateway.bench.loadclient stream|trace --url URL --concurrency N --duration S
[--trace FILE]``. It keeps N requests in flight (closed loop) for S seconds, then prints one
line ``AIGATEWAY_BENCH_JSON {...}``.

* ``stream``: streamed chat completions; time to first byte (first body chunk) and the gaps
  between body chunks as they arrive, and the whole response time.
* ``trace``: replays a trace file (JSON lines: ``body``, ``stream``, ``priority``) in order,
  wrapping around; latency per priority, and cache hits from the ``x-aigateway-cache``
  response header.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from aigateway.bench.bodies import (
    API_KEY,
    CACHE_HEADER,
    CHAT_PATH,
    PRIORITY_HEADER,
    chat_body,
    stream_body,
)

JSON_MARKER = "AIGATEWAY_BENCH_JSON "
_HEADERS = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) of ``values``, linearly interpolated; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * min(max(p, 0.0), 100.0) / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values_ms: Sequence[float]) -> dict[str, float | None]:
    return {f"p{p:g}": percentile(values_ms, p) for p in (50, 90, 99)}


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.latency_ms: list[float] = []
        self.ttfb_ms: list[float] = []
        self.gap_ms: list[float] = []
        self.chunks = 0
        self.hits = 0
        self.streamed = 0
        self.by_priority: dict[str, list[float]] = {}

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def _one(
    session: Any,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stream: bool,
    stats: _Stats,
    priority: str | None = None,
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            last = started
            first = True
            received = bytearray()
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                if first:
                    if stream:
                        stats.ttfb_ms.append((now - started) * 1000)
                    first = False
                elif stream:
                    stats.gap_ms.append((now - last) * 1000)
                last = now
                stats.chunks += 1
                received += chunk
            ok = resp.status < 300 and (not stream or received.endswith(b"data: [DONE]\n\n"))
            if resp.headers.get(CACHE_HEADER, "").lower() == "hit":
                stats.hits += 1
            status = resp.status
    except Exception as exc:  # any failure is one error of the run, never its end
        stats.requests += 1
        stats.error(f"{type(exc).__name__}: {exc}")
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    stats.requests += 1
    stats.streamed += stream
    if not ok:
        stats.error(f"status {status}" + ("" if status >= 300 else " (stream incomplete)"))
        return
    stats.latency_ms.append(elapsed_ms)
    if priority is not None:
        stats.by_priority.setdefault(priority, []).append(elapsed_ms)


async def _run(args: argparse.Namespace, entries: list[dict[str, Any]]) -> dict[str, Any]:
    import aiohttp

    url = args.url.rstrip("/") + CHAT_PATH
    stats = _Stats()
    counter: Iterator[int] = itertools.count()
    nonce = secrets.token_hex(4)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(deadline: float, into: _Stats) -> None:
            while time.perf_counter() < deadline:
                if into is not stats and args.mode == "trace":  # warming up: no trace entry
                    body = orjson.dumps(chat_body(f"warm-up {next(counter)}"))
                    await _one(session, url, body, _HEADERS, False, into)
                elif args.mode == "stream":
                    body = stream_body(nonce, next(counter))
                    await _one(session, url, body, _HEADERS, True, into)
                else:
                    entry = entries[next(counter) % len(entries)]
                    headers = {**_HEADERS, PRIORITY_HEADER: entry["priority"]}
                    body = entry["body"].encode()
                    await _one(
                        session, url, body, headers, entry["stream"], into, entry["priority"]
                    )

        # Unmeasured first: open every connection, so no measured request pays for one.
        warm, warm_stats = time.perf_counter() + args.warmup, _Stats()
        await asyncio.gather(*(worker(warm, warm_stats) for _ in range(args.concurrency)))
        if args.mode == "trace":
            counter = itertools.count()  # the measured replay starts at the trace's start
        started = time.perf_counter()
        deadline = started + args.duration
        await asyncio.gather(*(worker(deadline, stats) for _ in range(args.concurrency)))
        duration = time.perf_counter() - started
    result: dict[str, Any] = {
        "requests": stats.requests,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "duration_s": duration,
        "warmup_requests": warm_stats.requests,
        "latency_ms": summarize(stats.latency_ms),
    }
    if args.mode == "stream":
        result["ttfb_ms"] = summarize(stats.ttfb_ms)
        result["gap_ms"] = summarize(stats.gap_ms)
        result["chunks_per_response"] = stats.chunks / stats.requests if stats.requests else 0.0
    else:
        result["hits"] = stats.hits
        result["streamed"] = stats.streamed
        result["by_priority"] = {
            name: {"requests": len(values), **summarize(values)}
            for name, values in sorted(stats.by_priority.items())
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigateway.bench.loadclient")
    parser.add_argument("mode", choices=("stream", "trace"))
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--trace", help="trace file (JSON lines), for the trace mode")
    args = parser.parse_args(argv)
    if args.mode == "trace" and not args.trace:
        parser.error("the trace mode needs --trace FILE")
    entries: list[dict[str, Any]] = []
    if args.mode == "trace":
        entries = [orjson.loads(line) for line in Path(args.trace).read_bytes().splitlines()]
        if not entries:
            parser.error(f"the trace file {args.trace} is empty")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_run(args, entries))
    sys.stdout.write(JSON_MARKER + orjson.dumps(result).decode() + "\n")
    return 0


def parse_output(stdout: str) -> dict[str, Any]:
    """The result line of a load client run."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(JSON_MARKER):
            result: dict[str, Any] = orjson.loads(line[len(JSON_MARKER) :])
            return result
    raise RuntimeError(f"the load client printed no result:\n{stdout.strip()[-1000:]}")


if __name__ == "__main__":
    sys.exit(main())
