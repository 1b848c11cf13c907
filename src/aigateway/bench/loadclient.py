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
* ``open-loop``: ``python -m aigateway.bench.loadclient open-loop --url URL --rate R
  --duration S [--seed N]`` sends unique chat requests on a fixed schedule (R per second
  for S seconds, at most ``--max-requests``), whether or not earlier ones have answered,
  each with a priority drawn from :data:`PRIORITY_MIX` (deterministic for a seed); then
  waits ``--grace`` seconds at most for the last answers. Latency counts from each
  request's scheduled time; per priority: successes' latency, 429s (shed), 504s (timed out).
  It only speaks to 127.0.0.1.

``--url`` may be given several times (the nodes of a cluster): request *i* then goes to
URL *i* mod N. The trace mode counts, per request, whether its body was sent to the same
node before, only to another node (a hit there comes from the shared tier), or never
(:class:`RepeatTracker`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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


# --- open loop: pure parts ----------------------------------------------------------------

# (priority, share in %) of the open-loop load, most urgent first
PRIORITY_MIX: tuple[tuple[str, int], ...] = (
    ("critical", 10), ("high", 20), ("normal", 40), ("low", 30),
)  # fmt: skip
SHED_STATUS = 429
TIMEOUT_STATUS = 504


def open_loop_schedule(rate: float, duration_s: float, max_requests: int) -> list[float]:
    """Send times (seconds from the start) of a fixed arrival rate: ``i / rate`` for every
    request that starts before ``duration_s``, ``max_requests`` at most."""
    if rate <= 0 or duration_s <= 0 or max_requests <= 0:
        return []
    count = min(max_requests, int(rate * duration_s - 1e-9) + 1)
    return [i / rate for i in range(count)]


def priority_sequence(
    count: int, seed: int, mix: Sequence[tuple[str, int]] = PRIORITY_MIX
) -> list[str]:
    """``count`` priorities in the shares of ``mix`` (exact up to rounding: largest
    remainders), shuffled by a generator seeded with ``seed``."""
    total = sum(weight for _, weight in mix)
    if count <= 0 or total <= 0:
        return []
    exact = [count * weight / total for _, weight in mix]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(mix)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: count - sum(counts)]:
        counts[i] += 1
    out = [name for (name, _), n in zip(mix, counts, strict=True) for _ in range(n)]
    random.Random(seed).shuffle(out)
    return out


def priority_summary(
    records: Sequence[tuple[str, int, float]], order: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """Per priority, from (priority, HTTP status or 0 for no answer, latency ms) records:
    requests, successes and their p50/p99, shed (429) and timed out (504) with their rates,
    other errors. Priorities in ``order`` first (even without requests), then the rest."""
    names = list(order) + sorted({r[0] for r in records} - set(order))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [r for r in records if r[0] == name]
        ok = [ms for _, status, ms in mine if 200 <= status < 300]
        shed = sum(1 for _, status, _ in mine if status == SHED_STATUS)
        timed_out = sum(1 for _, status, _ in mine if status == TIMEOUT_STATUS)
        n = len(mine)
        out[name] = {
            "requests": n,
            "ok": len(ok),
            "p50": percentile(ok, 50),
            "p99": percentile(ok, 99),
            "shed": shed,
            "shed_rate": shed / n if n else None,
            "timeouts": timed_out,
            "timeout_rate": timed_out / n if n else None,
            "other_errors": n - len(ok) - shed - timed_out,
        }
    return out


def steady_window(duration_s: float, skip_start_s: float, trim: float = 0.2) -> tuple[float, float]:
    """The steady middle of a run of ``duration_s`` (seconds from its start): without its
    first ``max(skip_start_s, trim * duration)`` and its last ``trim * duration``; the
    second half when that leaves nothing, the whole run when even that does."""
    low = max(skip_start_s, trim * duration_s)
    high = duration_s * (1 - trim)
    if high - low > 0:
        return low, high
    if duration_s > 0:
        return duration_s / 2, duration_s
    return 0.0, 0.0


def observed_rate(
    call_times: Sequence[float], start: float, window: tuple[float, float]
) -> tuple[float | None, int]:
    """(calls per second, calls) among ``call_times`` (absolute, like ``start``) that fall
    in ``window`` (seconds after ``start``, half-open); None for an empty window."""
    low, high = start + window[0], start + window[1]
    calls = sum(1 for t in call_times if low <= t < high)
    span = window[1] - window[0]
    return (calls / span if span > 0 else None), calls


class RepeatTracker:
    """Requests and hits by where their prompt was sent before: ``same_node`` (to this
    node), ``cross_node`` (only to another node), ``first`` (nowhere yet). A prompt is the
    body without ``stream`` (:func:`prompt_identity`): a streamed request and a plain one
    of the same prompt share an answer. No I/O."""

    KINDS = ("first", "same_node", "cross_node")

    def __init__(self) -> None:
        self._seen: dict[bytes, set[int]] = {}
        self.counts = {kind: {"requests": 0, "hits": 0} for kind in self.KINDS}

    def sent(self, body: bytes, node: int) -> str:
        """Record a request of ``body`` to ``node`` as it is sent: its kind."""
        nodes = self._seen.setdefault(body, set())
        kind = "same_node" if node in nodes else ("cross_node" if nodes else "first")
        nodes.add(node)
        self.counts[kind]["requests"] += 1
        return kind

    def answered(self, kind: str, hit: bool) -> None:
        self.counts[kind]["hits"] += hit


def prompt_identity(body: bytes) -> bytes:
    """What tells prompts apart: the body without its ``stream`` flag."""
    fields = orjson.loads(body)
    fields.pop("stream", None)
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _local_only(url: str) -> None:
    host = urlsplit(url).hostname
    if host != "127.0.0.1":
        raise SystemExit(f"the open-loop load only speaks to 127.0.0.1, not {host!r}")


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
) -> bool:
    """One request; whether the gateway answered it from its cache."""
    started = time.perf_counter()
    hit = False
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
                hit = True
            status = resp.status
    except Exception as exc:  # any failure is one error of the run, never its end
        stats.requests += 1
        stats.error(f"{type(exc).__name__}: {exc}")
        return False
    elapsed_ms = (time.perf_counter() - started) * 1000
    stats.requests += 1
    stats.streamed += stream
    if not ok:
        stats.error(f"status {status}" + ("" if status >= 300 else " (stream incomplete)"))
        return hit
    stats.latency_ms.append(elapsed_ms)
    if priority is not None:
        stats.by_priority.setdefault(priority, []).append(elapsed_ms)
    return hit


async def _run(args: argparse.Namespace, entries: list[dict[str, Any]]) -> dict[str, Any]:
    import aiohttp

    urls = [url.rstrip("/") + CHAT_PATH for url in args.url]
    stats = _Stats()
    repeats = RepeatTracker()
    counter: Iterator[int] = itertools.count()
    nonce = secrets.token_hex(4)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(deadline: float, into: _Stats) -> None:
            while time.perf_counter() < deadline:
                index = next(counter)
                node = index % len(urls)
                url = urls[node]
                if into is not stats and args.mode == "trace":  # warming up: no trace entry
                    body = orjson.dumps(chat_body(f"warm-up {nonce} {index}"))
                    await _one(session, url, body, _HEADERS, False, into)
                elif args.mode == "stream":
                    body = stream_body(nonce, index)
                    await _one(session, url, body, _HEADERS, True, into)
                else:
                    entry = entries[index % len(entries)]
                    headers = {**_HEADERS, PRIORITY_HEADER: entry["priority"]}
                    body = entry["body"].encode()
                    kind = repeats.sent(entry["identity"], node)
                    hit = await _one(
                        session, url, body, headers, entry["stream"], into, entry["priority"]
                    )
                    repeats.answered(kind, hit)

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
        result["nodes"] = len(urls)
        result["repeats"] = repeats.counts
        result["by_priority"] = {
            name: {"requests": len(values), **summarize(values)}
            for name, values in sorted(stats.by_priority.items())
        }
    return result


async def _open_loop(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    urls = [url.rstrip("/") + CHAT_PATH for url in args.url]
    offsets = open_loop_schedule(args.rate, args.duration, args.max_requests)
    priorities = priority_sequence(len(offsets), args.seed)
    nonce = secrets.token_hex(4)
    records: list[tuple[str, int, float]] = []
    samples: list[str] = []
    connector = aiohttp.TCPConnector(limit=args.max_in_flight)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, priority: str, scheduled: float) -> None:
            body = orjson.dumps(chat_body(f"admission {nonce} {index}"))
            headers = {**_HEADERS, PRIORITY_HEADER: priority}
            status = 0
            try:
                url = urls[index % len(urls)]
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except Exception as exc:  # one failed request, never the run's end
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {exc}")
            records.append((priority, status, (time.perf_counter() - scheduled) * 1000))

        wall = time.time()
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for index, (offset, priority) in enumerate(zip(offsets, priorities, strict=True)):
            delay = started + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, priority, started + offset)))
        sent_s = time.perf_counter() - started
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=args.grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        duration = time.perf_counter() - started
    order = [name for name, _ in PRIORITY_MIX]
    ok = [ms for _, status, ms in records if 200 <= status < 300]
    errors = sum(1 for _, status, _ in records if not 200 <= status < 300)
    return {
        "requests": len(records),
        "errors": errors,
        "error_samples": samples,
        "duration_s": duration,
        "schedule_s": args.duration,
        "sent_s": sent_s,
        "started_wall": wall,
        "offered_rps": args.rate,
        "nodes": len(urls),
        "scheduled": len(offsets),
        "unfinished": len(pending),
        "seed": args.seed,
        "latency_ms": summarize(ok),
        "by_priority": priority_summary(records, order),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigateway.bench.loadclient")
    parser.add_argument("mode", choices=("stream", "trace", "open-loop"))
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="base URL, e.g. http://127.0.0.1:8081; repeatable: requests go round-robin",
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--trace", help="trace file (JSON lines), for the trace mode")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests/s")
    parser.add_argument("--seed", type=int, default=8, help="open loop: seed of the priorities")
    parser.add_argument("--max-requests", type=int, default=100_000, help="open loop: at most")
    parser.add_argument("--max-in-flight", type=int, default=2000, help="open loop: connections")
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="open loop: seconds per request"
    )
    parser.add_argument(
        "--grace", type=float, default=15.0, help="open loop: seconds to wait for the last answers"
    )
    args = parser.parse_args(argv)
    if args.mode == "open-loop":
        for url in args.url:
            _local_only(url)
        if not args.rate > 0:
            parser.error("--rate must be > 0")
    if args.mode == "trace" and not args.trace:
        parser.error("the trace mode needs --trace FILE")
    entries: list[dict[str, Any]] = []
    if args.mode == "trace":
        entries = [orjson.loads(line) for line in Path(args.trace).read_bytes().splitlines()]
        for entry in entries:
            entry["identity"] = prompt_identity(entry["body"].encode())
        if not entries:
            parser.error(f"the trace file {args.trace} is empty")
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if args.mode == "open-loop":
            result = runner.run(_open_loop(args))
        else:
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
