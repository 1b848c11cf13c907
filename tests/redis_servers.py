"""Real Redis servers for the tests: a single one, and a cluster of three masters.

Each starts on free loopback ports in a scratch directory, with persistence off, and is
stopped (its files removed) by its fixture; nothing talks to a Redis the tests did not
start. ``redis-server`` comes from Debian's package (``make test`` installs it).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from servers import LOG_DIR, Gateway, MockProvider, free_port

INSTALL_HINT = "the tests need redis-server: apt-get install redis-server (Debian/Ubuntu)"


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


class RedisServer:
    """One ``redis-server`` on a free port; ``url`` is its ``redis://`` address."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=LOG_DIR))
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (again, on the same port: a restart after ``kill``)."""
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"), *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.port} did not start: {self.log()}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """Kill it at once (no goodbye to its clients)."""
        self._end(signal.SIGKILL)

    def freeze(self) -> None:
        """Stop it answering while its connections stay open (SIGSTOP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self._end(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end(self, sig: int) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisCluster:
    """A Redis Cluster of three masters (no replicas); ``url`` is ``redis+cluster://``."""

    def __init__(self, masters: int = 3) -> None:
        self.servers: list[RedisServer] = []
        try:
            for _ in range(masters):
                # The bus port is explicit: by default it is the port + 10000, past 65535
                # for many free ports.
                self.servers.append(
                    RedisServer("--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf", "--cluster-port", str(free_port()))
                )  # fmt: skip
        except BaseException:
            self.stop()  # the ones already started, not left running
            raise
        addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            infos = [s.client().cluster("INFO") for s in self.servers]
            if all(info.get("cluster_state") == "ok" for info in infos):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the Redis cluster did not become ready")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.servers[0].port}"

    def flush(self) -> None:
        for server in self.servers:
            server.client().flushall()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_nodes(mock: MockProvider, redis_url: str, count: int = 2, **env: str) -> list[Gateway]:
    """``count`` gateway nodes (two workers each) sharing ``redis_url``: node-a, node-b...
    Stop them with ``stop_nodes``."""
    nodes: list[Gateway] = []
    try:
        for index in range(count):
            node_id = f"node-{chr(ord('a') + index)}"
            nodes.append(Gateway(mock, REDIS_URL=redis_url, AI_GATEWAY_NODE_ID=node_id, **env))
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: list[Gateway]) -> None:
    for node in nodes:
        node.stop()
