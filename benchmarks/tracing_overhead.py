"""What tracing at a 10% sampling ratio costs a request: paired rounds, tracing off and on.

    .venv/bin/python benchmarks/tracing_overhead.py [--seconds 8] [--rounds 6] [--workers 2]
        [--side off --side on ...] [--old-python /work/main/.venv/bin/python]

One mock provider (0 ms) and one OTLP/HTTP receiver (it answers every export with 200 and
counts the bytes), then per round and side a fresh gateway measured with wrk at one
connection, cache misses (unique bodies), as ``aigateway bench --scenario overhead``:

* ``off``: no ``OTEL_*`` variable;
* ``on``: ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the receiver,
  ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.1``;
* ``old-on``: as ``on``, with another checkout's Python (``--old-python``), for the code
  before a change, measured in the same minutes.

Each measurement gives wrk's p50 and the CPU time (user + sys, from ``/proc``) the
gateway's processes used per request.  The sides alternate within each round (their order
turns every round) so that load from elsewhere falls on all of them; the table shows each
round, the medians, and the paired differences against ``off`` (docs/benchmarks.md,
"Tracing (issue 18)").
"""

from __future__ import annotations

import argparse
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

import httpx

from aigateway.bench import bodies
from aigateway.bench.procs import cpu_seconds
from aigateway.bench.wrk import lua_script, parse_wrk_output, wrk_command

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def gateway(
    python: str, mock_url: str, otlp_url: str, side: str, workers: int, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "OPENAI_", "OTEL_"))
    }
    env.update(
        AI_GATEWAY_PORT=str(port),
        MAX_WORKERS=str(workers),
        LOG_LEVEL="warning",
        OPENAI_BASE_URL=mock_url + "/v1",
        OPENAI_API_KEY=bodies.API_KEY,
        OPENAI_RPS="1000000",
        AI_GATEWAY_DATA_DIR=str(work / f"data-{port}"),
    )
    if side != "off":
        env.update(TRACED, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url)
    process = subprocess.Popen(
        [python, "-m", "aigateway.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health", process)
    return process, url


def measure(url: str, seconds: int, work: Path, pid: int) -> tuple[float, float, int]:
    """(p50 ms, CPU ms per request of the gateway's processes, requests)."""
    body = bodies.unique_body_parts(secrets.token_hex(4))
    script = work / f"{secrets.token_hex(3)}.lua"
    script.write_text(lua_script(body, bodies.CHAT_PATH, {}))
    command = wrk_command(shutil.which("wrk") or "wrk", url, str(script), 1, seconds, 1)
    before = cpu_seconds(pid)
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    used = cpu_seconds(pid) - before
    result = parse_wrk_output(run.stdout)
    if result.error_count:
        raise RuntimeError(f"wrk saw errors: {result.errors}")
    return result.latency_ms["p50"], used * 1000 / max(result.requests, 1), result.requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--side", action="append", choices=("off", "on", "old-on"))
    parser.add_argument("--old-python", default="/work/main/.venv/bin/python")
    args = parser.parse_args()
    sides: list[str] = args.side or ["off", "on"]
    work = Path(tempfile.mkdtemp(prefix="aigateway-tracing-bench-"))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    otlp_url = f"http://127.0.0.1:{receiver.server_address[1]}"
    mock_port = free_port()
    mock = subprocess.Popen(
        [sys.executable, "-m", "aigateway.cli", "mock-upstream", "--port", str(mock_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mock_url = f"http://127.0.0.1:{mock_port}"
    figures: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    try:
        wait_ready(mock_url + "/v1/models", mock)
        for round_ in range(args.rounds):
            turn = round_ % len(sides)
            for side in sides[turn:] + sides[:turn]:
                python = args.old_python if side == "old-on" else sys.executable
                process, url = gateway(python, mock_url, otlp_url, side, args.workers, work)
                try:
                    measure(url, 2, work, process.pid)  # warm-up
                    p50, cpu, requests = measure(url, args.seconds, work, process.pid)
                    figures[side].append((p50, cpu))
                    load = os.getloadavg()[0]
                    print(
                        f"round {round_ + 1} {side:>6}: p50 {p50:.3f} ms, "
                        f"CPU {cpu:.3f} ms/request ({requests} requests, load {load:.1f})",
                        flush=True,
                    )
                finally:
                    process.terminate()
                    process.wait(timeout=60)
    finally:
        mock.terminate()
        mock.wait(timeout=30)
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nOTLP bytes received: {Receiver.received}")
    print("\n| side | median p50 (ms) | median CPU/request (ms) |")
    print("|---|---:|---:|")
    for side in sides:
        p50s = [p for p, _ in figures[side]]
        cpus = [c for _, c in figures[side]]
        print(f"| {side} | {statistics.median(p50s):.3f} | {statistics.median(cpus):.3f} |")
    if "off" in figures:
        print("\n| paired against off | median p50 diff (ms) | median CPU diff (ms) |")
        print("|---|---:|---:|")
        for side in sides:
            if side == "off":
                continue
            pairs = list(zip(figures[side], figures["off"], strict=True))
            dp = statistics.median(a[0] - b[0] for a, b in pairs)
            dc = statistics.median(a[1] - b[1] for a, b in pairs)
            print(f"| {side} - off | {dp:+.3f} | {dc:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
