"""`aigateway cluster-demo` (and `make cluster-demo`): one Redis and N gateway nodes on one
machine, each node with workers of its own, in front of one mock provider; to try the
cluster in a minute, and for the tests and the `cluster` benchmark to start the same.

Redis comes from the machine (`redis-server` on the PATH, e.g. Debian's package); it runs
with persistence off in a scratch directory, and everything stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aigateway.bench.procs import MockService, Service, ServiceError, free_port

__all__ = (
    "ClusterDemo", "RedisProcess", "add_demo_arguments", "node_id", "node_variables", "run_demo",
)  # fmt: skip

HOST = "127.0.0.1"
DEMO_KEY = "sk-demo-cluster-0123456789"


@dataclass
class RedisProcess:
    """A scratch ``redis-server`` (no persistence) on ``port``."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    # Whether ``stop`` removes ``directory``: only one ``start`` made for it, never a
    # directory someone handed in (it may hold anything).
    owns_directory: bool = False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @classmethod
    def start(cls, port: int | None = None, timeout_s: float = 10.0) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError(
                "redis-server is not installed: apt-get install redis-server (Debian/Ubuntu)"
            )
        port = port or free_port()
        directory = Path(tempfile.mkdtemp(prefix="aigateway-redis-"))
        args = [
            binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        redis = cls(process, port, directory, owns_directory=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if _ping(port):
                    return redis
            time.sleep(0.05)
        redis.stop()
        raise ServiceError(f"redis-server did not start on port {port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def _ping(port: int) -> bool:
    import socket

    with socket.create_connection((HOST, port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


@dataclass
class ClusterDemo:
    """Redis, one mock provider and ``nodes`` gateway nodes, started in that order."""

    redis: RedisProcess
    mock: MockService
    nodes: list[Service] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aigateway-demo-")))

    @classmethod
    def start(
        cls,
        nodes: int = 2,
        workers: int = 2,
        port: int = 8081,
        env: Mapping[str, str] | None = None,
        redis_port: int | None = None,
    ) -> ClusterDemo:
        log_dir = Path(tempfile.mkdtemp(prefix="aigateway-demo-"))
        redis = RedisProcess.start(redis_port)
        try:
            mock_port = free_port()
            mock = MockService.start(
                "mock",
                [sys.executable, "-m", "aigateway.testing.mock_provider", "--host", HOST,
                 "--port", str(mock_port)],
                _environment(), f"http://{HOST}:{mock_port}", "/_mock/stats", log_dir,
            )  # fmt: skip
        except BaseException:
            redis.stop()
            raise
        demo = cls(redis, mock, [], log_dir)
        try:
            for index in range(nodes):
                demo.nodes.append(demo._start_node(index, port + index, workers, env or {}))
        except BaseException:
            demo.stop()
            raise
        return demo

    def _start_node(self, index: int, port: int, workers: int, env: Mapping[str, str]) -> Service:
        variables = _environment()
        variables.update(node_variables(index, self.redis.url))
        variables.update(
            AI_GATEWAY_HOST=HOST,
            AI_GATEWAY_PORT=str(port),
            MAX_WORKERS=str(workers),
            LOG_LEVEL="warning",
            OPENAI_BASE_URL=self.mock.url + "/v1",
            OPENAI_API_KEY=DEMO_KEY,
            GOOGLE_AI_BASE_URL=self.mock.url + "/gemini/v1beta",
            GOOGLE_AI_API_KEY=DEMO_KEY,
            ANTHROPIC_BASE_URL=self.mock.url + "/anthropic/v1",
            ANTHROPIC_API_KEY=DEMO_KEY,
        )
        variables.update(env)
        args = [sys.executable, "-m", "aigateway.cli", "serve"]
        return Service.start(
            node_id(index), args, variables, f"http://{HOST}:{port}", "/health", self.log_dir
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.mock.stop()
        self.redis.stop()


def node_id(index: int) -> str:
    """The name of the ``index``-th node (0: ``node-a``)."""
    return f"node-{chr(ord('a') + index)}"


def node_variables(index: int, redis_url: str) -> dict[str, str]:
    """What makes a gateway the ``index``-th node of a cluster on ``redis_url``; the
    demo and the ``cluster`` benchmark add their own settings around it."""
    return {"AI_GATEWAY_NODE_ID": node_id(index), "REDIS_URL": redis_url}


def _environment() -> dict[str, str]:
    """This process's environment without the gateway's own variables."""
    ours = ("AI_GATEWAY_", "OPENAI_", "GOOGLE_", "ANTHROPIC_", "REDIS_", "CLUSTER_")
    return {k: v for k, v in os.environ.items() if not k.startswith(ours)}


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="gateway nodes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="workers per node (default 2)")
    parser.add_argument(
        "--port", type=int, default=8081, help="the first node's port; the next ones follow"
    )


def run_demo(args: argparse.Namespace) -> int:
    try:
        demo = ClusterDemo.start(args.nodes, args.workers, args.port)
    except ServiceError as exc:
        print(f"aigateway cluster-demo: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    first = demo.nodes[0].url
    print(f"redis   {demo.redis.url}")
    print(f"mock    {demo.mock.url}  (the provider every node calls)")
    for node in demo.nodes:
        print(f"{node.name}  {node.url}")
    print(
        f"\ntry:  curl -s {first}/v1/chat/completions -H 'content-type: application/json' "
        """-d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'"""
    )
    print(f"      then the same on {demo.nodes[-1].url}: a hit, one provider call in all")
    print(f"      curl -s {first}/admin/stats   curl -s {first}/health")
    print(f"logs: {demo.log_dir}    Ctrl-C stops everything")
    try:
        while not stop.wait(1.0):
            dead = [node.name for node in demo.nodes if not node.alive()]
            if dead:
                print(f"aigateway cluster-demo: {', '.join(dead)} stopped", file=sys.stderr)
                return 1
    finally:
        demo.stop()
    return 0
