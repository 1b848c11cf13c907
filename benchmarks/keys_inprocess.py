"""What a tenant key costs a request, in process: CPU per request, flat and keyed in turn.

    .venv/bin/python benchmarks/keys_inprocess.py [--requests 4000] [--hits] [--calls]
        [--limits JSON]

The app as a worker builds it (``create_worker_app``'s settings: a node segment, the
cache, prices for ``gpt-4o-mini``, a data directory), served its ASGI calls directly on a
uvloop loop, one request at a time, its provider the bundled mock (a subprocess, 0 ms).
Requests alternate one by one between the flat key (``AI_GATEWAY_API_KEYS``) and a tenant
key with every limit on and never reached, so whatever else the machine does falls on
both alike; each request's CPU is this thread's (``time.thread_time``), the only one that
runs the app.  Prints the median and mean per side and their difference in microseconds
(misses: unique bodies; ``--hits``: one body).  ``--calls``: the Python calls a keyed
request makes beyond a flat one, by function (cProfile's counts: unlike its times, they do
not depend on the machine's load).  ``--limits``: another tenant key than the default's
(e.g. ``'{"name": "x"}'``, a key without limits).  Run it from another checkout's
interpreter to measure that checkout's code (docs/benchmarks.md, "Tenant keys").
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aigateway import app as app_module
from aigateway import node, shm
from aigateway.config import load_settings
from request_path import free_port, wait_ready

HOST = "127.0.0.1"
FLAT = "sk-bench-0123456789abcdef"
LIMITS = {
    "name": "bench", "rpm": 10**9, "tpm": 10**11, "max_parallel": 100_000,
    "budget_usd": 10**9, "budget_period": "month", "models": ["gpt-4o-mini"],
}  # fmt: skip


async def call(
    app: Any, method: str, path: str, body: bytes, secret: str | None
) -> tuple[int, bytes]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    if secret:
        headers.append((b"authorization", f"Bearer {secret}".encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": (HOST, 40000), "server": (HOST, 8081),
        "state": {},
    }  # fmt: skip
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status, chunks = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    return task, inbox


async def run(options: argparse.Namespace, mock_url: str, work: Path) -> None:
    config = work / "gateway.toml"
    config.write_text('[prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.60\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "OPENAI_"))}
    env.update(
        LOG_LEVEL="warning", OPENAI_BASE_URL=mock_url + "/v1", OPENAI_API_KEY=FLAT,
        OPENAI_MAX_CONNS="64", OPENAI_RPS="1000000", AI_GATEWAY_API_KEYS=FLAT,
        AI_GATEWAY_CONFIG=str(config), AI_GATEWAY_DATA_DIR=str(work / "data"),
        CACHE_ENABLED="true", CACHE_DIR=str(work / "cache"),
    )  # fmt: skip
    (work / "data").mkdir()
    (work / "cache").mkdir()
    settings = load_settings(env)
    settings = dataclasses.replace(
        settings, data_dir=str(work / "data"), cache_path=str(work / "cache")
    )
    segment = shm.create_segment(node.node_layout(settings))
    settings = dataclasses.replace(settings, shm_name=segment.name)
    app = app_module.create_app(settings)
    app_module._settle_collector()
    task, inbox = await lifespan(app)
    try:
        limits = options.limits.encode() or json.dumps(LIMITS).encode()
        status, made = await call(app, "POST", "/admin/keys", limits, None)
        assert status == 201, made
        tenant = json.loads(made)["key"]
        nonce = os.urandom(4).hex()
        counter = 0

        def body() -> bytes:
            nonlocal counter
            counter += 1
            text = "Say hello" if options.hits else f"bench {nonce} request {counter}"
            message = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
            return json.dumps(message).encode()

        path = "/v1/chat/completions"
        for _ in range(300):  # warm: pools, caches, the key's slot
            for secret in (FLAT, tenant):
                status, answer = await call(app, "POST", path, body(), secret)
                assert status == 200, answer
        times: dict[str, list[float]] = {"flat": [], "keys": []}
        profiles = {"flat": cProfile.Profile(), "keys": cProfile.Profile()}
        for i in range(options.requests):
            turns = (("flat", FLAT), ("keys", tenant))
            for side, secret in turns if i % 2 else turns[::-1]:
                payload = body()
                if options.calls:
                    profiles[side].enable()
                started = time.thread_time()
                status, answer = await call(app, "POST", path, payload, secret)
                times[side].append(time.thread_time() - started)
                if options.calls:
                    profiles[side].disable()
                assert status == 200, answer
        report(options, times, profiles if options.calls else None)
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)
        segment.close()
        segment.unlink()


def report(
    options: argparse.Namespace,
    times: dict[str, list[float]],
    profiles: dict[str, cProfile.Profile] | None,
) -> None:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    what = "hits" if options.hits else "misses"
    print(f"load average {load}; {options.requests} requests a side, {what}")
    for side, values in times.items():
        median, mean = statistics.median(values) * 1e6, statistics.fmean(values) * 1e6
        print(f"{side}: median {median:.1f} us, mean {mean:.1f} us")
    flat, keys = times["flat"], times["keys"]
    median = (statistics.median(keys) - statistics.median(flat)) * 1e6
    mean = (statistics.fmean(keys) - statistics.fmean(flat)) * 1e6
    print(f"keys - flat: median {median:+.1f} us, mean {mean:+.1f} us")
    if profiles is None:
        return
    # Calls, not times: a count does not depend on the machine's load.
    stats = {side: pstats.Stats(p).stats for side, p in profiles.items()}  # type: ignore[attr-defined]
    rows = []
    for func in set(stats["flat"]) | set(stats["keys"]):
        flat_calls = stats["flat"].get(func, (0, 0))[1]
        keys_calls = stats["keys"].get(func, (0, 0))[1]
        if keys_calls != flat_calls:
            rows.append(((keys_calls - flat_calls) / options.requests, func))
    rows.sort(key=lambda row: -row[0])
    print("calls a request +keys | function")
    for more, (file, line, name) in rows[:50]:
        print(f"{more:+6.2f} {name} {file.split('site-packages/')[-1].split('src/')[-1]}:{line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--hits", action="store_true")
    parser.add_argument("--calls", action="store_true", help="count the calls a key adds")
    parser.add_argument("--limits", default="", help="the tenant key's JSON (default: all on)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="keys-inprocess-"))
    mock_port = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "aigateway.testing.mock_provider", "--host", HOST,
         "--port", str(mock_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(mock_port, "/_mock/stats")
        uvloop.run(run(options, f"http://{HOST}:{mock_port}", work))
    finally:
        mock.terminate()
        mock.wait(15)


if __name__ == "__main__":
    main()
