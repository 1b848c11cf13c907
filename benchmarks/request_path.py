"""One connection, paired: what each version of the gateway costs a request.

    .venv/bin/python benchmarks/request_path.py [--rounds 10] [--requests 2000] [--identical]
        NAME=PYTHON:KIND ...

KIND is ``gateway``, ``passthrough`` or ``constant`` (``aigateway.bench.baselines``);
PYTHON the interpreter of the checkout to run it from, so two worktrees (old and new
code) are measured side by side, e.g.::

    benchmarks/request_path.py old=../wt-main/.venv/bin/python:gateway \\
        new=.venv/bin/python:gateway pt=.venv/bin/python:passthrough

One mock provider (0 ms), one worker per target (with one connection only one worker
serves), and a blocking keep-alive client sending one request at a time (unique bodies:
misses; ``--identical``: one body, hits). The targets take turns, in alternating order,
``--rounds`` times; each turn reports p50/p99 and the CPU time per request of the
target's processes and of its worker's main thread (``/proc/<pid>/task/<pid>/stat``),
the figure that survives a loaded machine best: the main thread runs every line of
Python and the event loop. The table shows medians over the rounds
(docs/benchmarks.md, "Issue 19").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

API_KEY = "sk-bench-0123456789abcdef"
HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(port: int, path: str) -> None:
    for _ in range(600):
        try:
            with socket.create_connection((HOST, port), timeout=1) as c:
                c.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                if c.recv(4096).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"port {port} never answered {path}")


def stat_cpu(path: str) -> float:
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += stat_cpu(f"/proc/{pid}/stat")
    return total


class Target:
    def __init__(self, name: str, python: str, kind: str, mock_url: str, work: Path) -> None:
        self.name, self.port = name, free_port()
        env = dict(os.environ)
        if kind == "gateway":
            args = [python, "-m", "aigateway.cli", "serve"]
            env.update(
                AI_GATEWAY_HOST=HOST, AI_GATEWAY_PORT=str(self.port), MAX_WORKERS="1",
                LOG_LEVEL="warning", OPENAI_BASE_URL=mock_url + "/v1", OPENAI_API_KEY=API_KEY,
                OPENAI_MAX_CONNS="1024", OPENAI_RPS="1000000",
                AI_GATEWAY_DATA_DIR=str(work / f"data-{self.port}"),
            )  # fmt: skip
        else:
            args = [python, "-m", "aigateway.bench.baselines", kind, "--host", HOST,
                    "--port", str(self.port), "--workers", "1"]  # fmt: skip
            config = {"upstream": mock_url + "/v1", "api_key": API_KEY, "client": "aiohttp",
                      "max_connections": 1024}  # fmt: skip
            env["AIGATEWAY_BENCH_BASELINE"] = json.dumps(config)
        log = (work / f"{name}.log").open("w")
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.worker = 0

    def ready(self) -> None:
        wait_ready(self.port, "/health")
        workers = [p for p in process_tree(self.process.pid) if p != self.process.pid]
        time.sleep(0.5)
        self.worker = max(workers, key=lambda p: tree_cpu([p]))  # the one that served

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(15)


def client(port: int, n: int, body: Callable[[], bytes]) -> list[float]:
    latencies = []
    with socket.create_connection((HOST, port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            payload = body()
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"content-type: application/json\r\nauthorization: Bearer {API_KEY}\r\n"
                f"content-length: {len(payload)}\r\n\r\n"
            )
            started = time.perf_counter()
            c.sendall(head.encode() + payload)
            answer = b""
            while True:
                answer += c.recv(65536)
                top, sep, rest = answer.partition(b"\r\n\r\n")
                if sep:
                    lengths = [
                        h for h in top.split(b"\r\n") if h.lower().startswith(b"content-length:")
                    ]
                    if lengths and len(rest) >= int(lengths[0].split(b":")[1]):
                        break
            latencies.append(time.perf_counter() - started)
            if not top.startswith(b"HTTP/1.1 200"):
                raise SystemExit(top.decode(errors="replace"))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="NAME=PYTHON:KIND")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--identical", action="store_true", help="one body: cache hits")
    options = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"request-path-{os.getpid()}"
    work.mkdir()
    first_python = options.targets[0].split("=", 1)[1].rsplit(":", 1)[0]
    mock_port = free_port()
    mock = subprocess.Popen(
        [first_python, "-m", "aigateway.testing.mock_provider", "--host", HOST,
         "--port", str(mock_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    targets: list[Target] = []
    nonce, counter = os.urandom(4).hex(), [0]

    def body() -> bytes:
        text = "Say hello to the benchmark"
        if not options.identical:
            counter[0] += 1
            text = f"bench {nonce} request {counter[0]}"
        message = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        return json.dumps(message).encode()

    try:
        wait_ready(mock_port, "/_mock/stats")
        for spec in options.targets:
            name, rest = spec.split("=", 1)
            python, kind = rest.rsplit(":", 1)
            targets.append(Target(name, python, kind, f"http://{HOST}:{mock_port}", work))
        for target in targets:
            target.ready()
            client(target.port, 300, body)  # warm: connections, pools, caches
        rows: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
        for turn in range(options.rounds):
            for target in targets if turn % 2 == 0 else targets[::-1]:
                pids = process_tree(target.process.pid)
                main_stat = f"/proc/{target.worker}/task/{target.worker}/stat"
                cpu0, main0 = tree_cpu(pids), stat_cpu(main_stat)
                latencies = sorted(client(target.port, options.requests, body))
                cpu1, main1 = tree_cpu(pids), stat_cpu(main_stat)
                n = len(latencies)
                row = rows[target.name]
                row.setdefault("p50", []).append(latencies[n // 2] * 1000)
                row.setdefault("p99", []).append(latencies[int(n * 0.99)] * 1000)
                row.setdefault("cpu", []).append((cpu1 - cpu0) / n * 1000)
                row.setdefault("main", []).append((main1 - main0) / n * 1000)
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average {' '.join(load)}; medians of {options.rounds} rounds")
        print("| target | p50 ms | p99 ms | cpu/req ms | main thread/req ms |")
        print("|---|---:|---:|---:|---:|")
        for name, row in rows.items():
            figures = [statistics.median(row[k]) for k in ("p50", "p99", "cpu", "main")]
            print(f"| {name} | " + " | ".join(f"{f:.3f}" for f in figures) + " |")
    finally:
        for target in targets:
            target.stop()
        mock.terminate()
        mock.wait(15)


if __name__ == "__main__":
    main()
