"""What tracing at a 10% sampling ratio costs a request: the sides side by side, interleaved.

    .venv/bin/python benchmarks/tracing_overhead.py [--requests 2000] [--rounds 5]
        [--side off --side on ...] [--old-python /work/main/.venv/bin/python]

One mock provider (0 ms) and one OTLP/HTTP receiver (it answers every export with 200 and
counts the bytes), then one gateway (one worker) per side, all running at once:

* ``off``: no ``OTEL_*`` variable;
* ``on``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the receiver,
  ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.1``;
* ``old-on``, ``old-off``: as ``on`` and ``off``, with another checkout's Python
  (``--old-python``): the code before a change (``old-off`` shows that the two checkouts
  differ in nothing else).

One client sends one request at a time (one connection per gateway, kept alive, cache
misses: every body unique), to each side in turn: request 1 to ``off``, 2 to ``on``, 3 to
``old-on``, 4 to ``off``...  So load from elsewhere on a shared machine falls on every
side alike, within milliseconds.  Per round: each side's p50 (the client's time from
sending to the last byte) and the CPU time (user + sys, ``/proc``) its gateway's processes
used per request; then the medians over the rounds, and the paired differences against
``off`` (docs/benchmarks.md, "Tracing (issue 18)").
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from aigateway.bench import bodies
from aigateway.bench.procs import cpu_seconds
from harness import free_port, gateway_env, serve_gateway, start_mock, wait_ready

TRACED = {
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.1",
}


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that accepts every export (an empty answer is a success)."""

    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        Receiver.received += len(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def gateway(
    python: str, mock_url: str, otlp_url: str, side: str, workers: int, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = gateway_env(port, mock_url, workers, work, drop=("OTEL_",))
    if not side.endswith("off"):
        env.update(TRACED, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url)
    return serve_gateway(python, port, env)


def post(connection: http.client.HTTPConnection, body: bytes) -> float:
    """Seconds from sending ``body`` to the answer's last byte."""
    started = time.perf_counter()
    connection.request("POST", bodies.CHAT_PATH, body, {"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side", action="append", choices=("off", "on", "old-on", "old-off"))
    parser.add_argument("--old-python", default="/work/main/.venv/bin/python")
    args = parser.parse_args()
    sides: list[str] = args.side or ["off", "on"]
    work = Path(tempfile.mkdtemp(prefix="aigateway-tracing-bench-"))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otlp_url = f"http://127.0.0.1:{receiver.server_address[1]}"
    mock, mock_url = start_mock()
    gateways: dict[str, subprocess.Popen[bytes]] = {}
    connections: dict[str, http.client.HTTPConnection] = {}
    p50s: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[float]] = {side: [] for side in sides}
    loads: list[float] = []
    nonce = secrets.token_hex(4)
    try:
        wait_ready(mock_url + "/v1/models", mock)
        for side in sides:
            python = args.old_python if side.startswith("old-") else sys.executable
            gateways[side], url = gateway(python, mock_url, otlp_url, side, 1, work)
            connections[side] = http.client.HTTPConnection(url.removeprefix("http://"))
        count = 0

        def body() -> bytes:
            nonlocal count
            count += 1
            return orjson.dumps(bodies.chat_body(f"tracing bench {nonce} {count}"))

        for _ in range(200):  # warm-up
            for side in sides:
                post(connections[side], body())
        for round_ in range(args.rounds):
            times: dict[str, list[float]] = {side: [] for side in sides}
            before = {side: cpu_seconds(gateways[side].pid) for side in sides}
            for _ in range(args.requests):
                for side in sides:
                    times[side].append(post(connections[side], body()))
            loads.append(os.getloadavg()[0])
            line = []
            for side in sides:
                cpu = (cpu_seconds(gateways[side].pid) - before[side]) * 1000 / args.requests
                p50 = statistics.median(times[side]) * 1000
                p50s[side].append(p50)
                cpus[side].append(cpu)
                line.append(f"{side} {p50:.3f} ms / CPU {cpu:.3f} ms")
            print(
                f"round {round_ + 1}: " + ", ".join(line) + f" (load {loads[-1]:.1f})", flush=True
            )
    finally:
        for connection in connections.values():
            connection.close()
        for process in gateways.values():
            process.terminate()
            process.wait(timeout=60)
        mock.terminate()
        mock.wait(timeout=30)
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    low, high = min(loads), max(loads)
    print(f"\nOTLP bytes received: {Receiver.received}; load average {low:.1f}-{high:.1f}")
    print("\n| side | median p50 (ms) | median CPU per request (ms) |")
    print("|---|---:|---:|")
    for side in sides:
        p50, cpu = statistics.median(p50s[side]), statistics.median(cpus[side])
        print(f"| {side} | {p50:.3f} | {cpu:.3f} |")
    if "off" in sides:
        print("\n| paired against off | p50, median of the rounds (ms) | CPU per request (ms) |")
        print("|---|---:|---:|")
        for side in sides:
            if side == "off":
                continue
            dp = [a - b for a, b in zip(p50s[side], p50s["off"], strict=True)]
            dc = [a - b for a, b in zip(cpus[side], cpus["off"], strict=True)]
            higher = sum(d > 0 for d in dp)
            print(
                f"| {side} - off | {statistics.median(dp):+.3f} ({higher} of {len(dp)} higher) "
                f"| {statistics.median(dc):+.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
