"""What a tenant key costs a request in CPU, paired: the same worker, with and without it.

    .venv/bin/python benchmarks/keys_cpu.py [--rounds 8] [--requests 1500] NAME=PYTHON ...

Each NAME=PYTHON is a checkout's interpreter (old and new code side by side, e.g.
``base=../wt-base/.venv/bin/python new=.venv/bin/python``).  One mock provider (0 ms);
per checkout one gateway with one worker, prices for ``gpt-4o-mini``, the bench's flat key
(``AI_GATEWAY_API_KEYS``) and one tenant key with every limit on and never reached (rpm,
tpm, max_parallel, a monthly budget, a model list), as ``keys_overhead.py`` makes it.

A blocking keep-alive client sends one request at a time; ``flat`` presents the flat key,
``keys`` the tenant key, to the same worker, so the two sides differ only by the key.
Loads: ``miss`` (unique bodies) and ``hit`` (one body).  Every (checkout, side, load)
takes its turn each round, in an order reversed every other round; the figure is the
worker's main-thread CPU per request (``/proc/<pid>/task/<pid>/stat``: it runs every line
of Python and the event loop), the one that survives a loaded machine best, and the
process's.  The table shows medians over the rounds (docs/benchmarks.md, "Tenant keys").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from request_path import (  # noqa: E402
    API_KEY,
    HOST,
    free_port,
    process_tree,
    stat_cpu,
    tree_cpu,
    wait_ready,
)

PRICES = '[prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.60\n'
LIMITS = {
    "name": "bench", "rpm": 10**9, "tpm": 10**11, "max_parallel": 100_000,
    "budget_usd": 10**9, "budget_period": "month", "models": ["gpt-4o-mini"],
}  # fmt: skip


class Gateway:
    def __init__(self, name: str, python: str, mock_url: str, work: Path) -> None:
        self.name, self.port = name, free_port()
        config = work / f"{name}.toml"
        config.write_text(PRICES)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "OPENAI_"))}
        env.update(
            AI_GATEWAY_HOST=HOST, AI_GATEWAY_PORT=str(self.port), MAX_WORKERS="1",
            LOG_LEVEL="warning", OPENAI_BASE_URL=mock_url + "/v1", OPENAI_API_KEY=API_KEY,
            OPENAI_MAX_CONNS="1024", OPENAI_RPS="1000000", AI_GATEWAY_API_KEYS=API_KEY,
            AI_GATEWAY_CONFIG=str(config), AI_GATEWAY_DATA_DIR=str(work / f"data-{name}"),
            CACHE_ENABLED="true",
        )  # fmt: skip
        log = (work / f"{name}.log").open("w")
        self.process = subprocess.Popen(
            [python, "-m", "aigateway.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.worker = 0
        self.secret = ""

    def ready(self) -> None:
        wait_ready(self.port, "/health")
        made = urllib.request.urlopen(
            urllib.request.Request(
                f"http://{HOST}:{self.port}/admin/keys",
                data=json.dumps(LIMITS).encode(),
                headers={"content-type": "application/json"},
            ),
            timeout=10,
        )
        self.secret = json.loads(made.read())["key"]
        workers = [p for p in process_tree(self.process.pid) if p != self.process.pid]
        self.worker = max(workers, key=lambda p: tree_cpu([p]))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def client(port: int, n: int, secret: str, body: object) -> None:
    import socket

    with socket.create_connection((HOST, port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            payload = body() if callable(body) else body
            assert isinstance(payload, bytes)
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"content-type: application/json\r\nauthorization: Bearer {secret}\r\n"
                f"content-length: {len(payload)}\r\n\r\n"
            )
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
            if not top.startswith(b"HTTP/1.1 200"):
                raise SystemExit(top.decode(errors="replace"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="NAME=PYTHON")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1500)
    options = parser.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"keys-cpu-{os.getpid()}"
    work.mkdir()
    first_python = options.targets[0].split("=", 1)[1]
    mock_port = free_port()
    mock = subprocess.Popen(
        [first_python, "-m", "aigateway.testing.mock_provider", "--host", HOST,
         "--port", str(mock_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nonce, counter = os.urandom(4).hex(), [0]

    def unique() -> bytes:
        counter[0] += 1
        text = f"bench {nonce} request {counter[0]}"
        return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()

    same = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    ).encode()
    loads = {"miss": unique, "hit": same}
    gateways: list[Gateway] = []
    try:
        wait_ready(mock_port, "/_mock/stats")
        for spec in options.targets:
            name, python = spec.split("=", 1)
            gateways.append(Gateway(name, python, f"http://{HOST}:{mock_port}", work))
        for gateway in gateways:
            gateway.ready()
            for secret in (API_KEY, gateway.secret):
                client(gateway.port, 300, secret, unique)
                client(gateway.port, 100, secret, same)
        turns = [(g, side, load) for g in gateways for side in ("flat", "keys") for load in loads]
        rows: dict[tuple[str, str, str], dict[str, list[float]]] = {}
        for round_ in range(options.rounds):
            for gateway, side, load in turns if round_ % 2 == 0 else turns[::-1]:
                secret = API_KEY if side == "flat" else gateway.secret
                pids = process_tree(gateway.process.pid)
                main_stat = f"/proc/{gateway.worker}/task/{gateway.worker}/stat"
                cpu0, main0 = tree_cpu([gateway.worker]), stat_cpu(main_stat)
                started = time.perf_counter()
                client(gateway.port, options.requests, secret, loads[load])
                wall = time.perf_counter() - started
                cpu1, main1 = tree_cpu([gateway.worker]), stat_cpu(main_stat)
                del pids
                n = options.requests
                row = rows.setdefault((gateway.name, side, load), {})
                row.setdefault("main", []).append((main1 - main0) / n * 1000)
                row.setdefault("cpu", []).append((cpu1 - cpu0) / n * 1000)
                row.setdefault("wall", []).append(wall / n * 1000)
        load_avg = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average {' '.join(load_avg)}; medians of {options.rounds} rounds")
        print("| checkout | load | main/req flat | main/req keys | + | cpu/req flat | cpu/req keys | + |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for gateway in gateways:
            for load in loads:
                f = {k: statistics.median(v) for k, v in rows[gateway.name, "flat", load].items()}
                k = {k: statistics.median(v) for k, v in rows[gateway.name, "keys", load].items()}
                print(
                    f"| {gateway.name} | {load} | {f['main']:.3f} | {k['main']:.3f} | "
                    f"{k['main'] - f['main']:+.3f} | {f['cpu']:.3f} | {k['cpu']:.3f} | "
                    f"{k['cpu'] - f['cpu']:+.3f} |"
                )
    finally:
        for gateway in gateways:
            gateway.stop()
        mock.terminate()
        mock.wait(15)


if __name__ == "__main__":
    main()
