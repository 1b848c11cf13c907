"""What a tenant key costs a request, in process: CPU per request, flat and keyed in turn.

    .venv/bin/python benchmarks/keys_inprocess.py [--requests 4000] [--hits] [--profile]

The app as a worker builds it (``create_worker_app``'s settings: a node segment, the
cache, prices for ``gpt-4o-mini``, a data directory), served its ASGI calls directly on a
uvloop loop, one request at a time, its provider the bundled mock (a subprocess, 0 ms).
Requests alternate one by one between the flat key (``AI_GATEWAY_API_KEYS``) and a tenant
key with every limit on and never reached, so whatever else the machine does falls on
both alike; each request's CPU is this thread's (``time.thread_time``), the only one that
runs the app.  Prints the median and mean per side and their difference in microseconds
(misses: unique bodies; ``--hits``: one body).  ``--profile``: a cProfile of the keyed
requests, the flat ones subtracted by function (what the key adds, by function).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
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

from request_path import free_port, wait_ready  # noqa: E402

from aigateway import app as app_module  # noqa: E402
from aigateway import node, shm  # noqa: E402
from aigateway.config import load_settings  # noqa: E402

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
        status, made = await call(app, "POST", "/admin/keys", options.limits.encode() or json.dumps(LIMITS).encode(), None)
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
        profile = cProfile.Profile() if options.profile else None
        profiles = {"flat": cProfile.Profile(), "keys": cProfile.Profile()}
        gc_before = gc.get_stats()
        for i in range(options.requests):
            for side, secret in (("flat", FLAT), ("keys", tenant)) if i % 2 else (
                ("keys", tenant), ("flat", FLAT)
            ):
                payload = body()
                prof = profiles[side] if profile is not None else None
                if prof is not None:
                    prof.enable()
                started = time.thread_time()
                status, answer = await call(app, "POST", path, payload, secret)
                times[side].append(time.thread_time() - started)
                if prof is not None:
                    prof.disable()
                assert status == 200, answer
        gc_after = gc.get_stats()
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average {' '.join(load)}; {options.requests} requests a side, "
              f"{'hits' if options.hits else 'misses'}")  # fmt: skip
        for side, values in times.items():
            print(
                f"{side}: median {statistics.median(values) * 1e6:.1f} us, "
                f"mean {statistics.fmean(values) * 1e6:.1f} us"
            )
        flat, keys = times["flat"], times["keys"]
        print(
            f"keys - flat: median {(statistics.median(keys) - statistics.median(flat)) * 1e6:+.1f}"
            f" us, mean {(statistics.fmean(keys) - statistics.fmean(flat)) * 1e6:+.1f} us"
        )
        print("gc collections:", [a["collections"] - b["collections"]
                                  for a, b in zip(gc_after, gc_before, strict=True)])  # fmt: skip
        if profile is not None:
            stats = {
                side: pstats.Stats(p).stats  # type: ignore[attr-defined]
                for side, p in profiles.items()
            }
            rows = []
            for func in set(stats["flat"]) | set(stats["keys"]):
                f = stats["flat"].get(func, (0, 0, 0, 0))
                k = stats["keys"].get(func, (0, 0, 0, 0))
                n = options.requests
                rows.append(((k[2] - f[2]) / n, (k[3] - f[3]) / n, f[1], k[1], func))
            rows.sort(key=lambda r: -abs(r[0]) if options.profile != "calls" else -(r[3] - r[2]))
            print("own us/req +keys | cumulative +keys | calls flat | calls keys | function")
            for own, cum, cf, ck, func in rows[:40]:
                print(f"{own * 1e6:+8.2f} {cum * 1e6:+8.2f} {cf:7d} {ck:7d} "
                      f"{func[2]} {func[0].split('site-packages/')[-1].split('src/')[-1]}:{func[1]}")  # fmt: skip
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 30)
        segment.close()
        segment.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--hits", action="store_true")
    parser.add_argument("--profile", nargs="?", const="time", choices=("time", "calls"))
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
