"""`aigateway serve`: the main process that starts and stops the Granian workers.

It owns what belongs to the node rather than to one worker: the bundled mock
provider when no provider key is set, the node's cache directory and its shared-memory
segment (token buckets, stats, health board, live settings, cluster state), created
before the workers start and removed after they stop, the node agent that joins the
other nodes through Redis when ``REDIS_URL`` is set (``aigateway.cluster``), and the
limits every worker's listener runs with (client timeouts, connections per worker, open
files). Workers are separate processes
that load the app by import string.
"""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import math
import multiprocessing
import os
import queue
import resource
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import IO, Any

from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes, TaskImpl
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from aigateway import __version__, logs, node, shm
from aigateway.cache import node_cache
from aigateway.cluster.agent import node_id_of
from aigateway.cluster.start import start_agent
from aigateway.config import WORKER_SETTINGS_ENV, Settings, settings_to_worker_env
from aigateway.keys.service import data_directory, prepare_data_dir
from aigateway.scrub import secrets_of

logger = logging.getLogger("aigateway")

MOCK_READY_PREFIX = "mock provider listening on "
# Where the bundled mock provider serves each wire format (provider_specs.WIRE_FORMATS).
MOCK_PATHS = {"openai": "/v1", "gemini": "/gemini/v1beta", "anthropic": "/anthropic/v1"}

LOG_FORMAT = logs.TEXT_FORMAT

# Connections that have been accepted by the kernel but not yet by a worker (per worker:
# on Linux each worker listens on its own SO_REUSEPORT socket); capped by somaxconn.
LISTEN_BACKLOG = 2048
# hyper's read buffer grows up to this, so it bounds a request head (431 past it; a head
# that arrives in one burst may reach twice this); the default ~400 KiB let each slow
# connection pin that much memory.
MAX_HEAD_BYTES = 64 * 1024
# File descriptors a worker needs beside its client connections: provider pools, the
# cache, the shared segment, logs, the loop's own.
FD_RESERVE = 512


def logging_config(level: str, fmt: str = "text", secrets: Sequence[str] = ()) -> dict[str, Any]:
    """One format (text or JSON) for the gateway's and Granian's log lines, on stderr."""
    return logs.logging_config(level, fmt, secrets)


def serve(settings: Settings) -> int:
    log_config = logging_config(settings.log_level, settings.log_format, secrets_of(settings))
    logging.config.dictConfig(log_config)
    taken = port_in_use(settings.host, settings.port)
    if taken is not None:
        print(
            f"aigateway: cannot listen on {settings.host}:{settings.port} "
            f"(AI_GATEWAY_PORT / AI_GATEWAY_HOST): {taken}",
            file=sys.stderr,
        )
        return 2
    # Tenant keys and their spend: a directory that cannot be written stops us here.
    data_dir = data_directory(settings)
    problem = prepare_data_dir(data_dir)
    if problem is not None:
        print(f"aigateway: AI_GATEWAY_DATA_DIR: {problem}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(settings, data_dir=data_dir)
    mock: MockProviderProcess | None = None
    if wants_mock_provider(settings):
        mock = MockProviderProcess.start(settings.host)
        settings = route_to_mock(settings, mock.url)
        logger.warning(
            "no provider key set (%s are empty): routing every provider to the bundled mock "
            "provider at %s; answers are canned, not from a real model",
            _and([p.key_variable for p in settings.built_in]),
            mock.url,
        )
    logger.info(
        "aigateway %s serving on http://%s:%d with %d worker process(es), upstream client %s",
        __version__,
        settings.host,
        settings.port,
        settings.workers,
        settings.upstream_client,
    )
    # The node's directory: its cache (when enabled) and, unless RESPONSES_STORE_DIR says
    # otherwise, its stored Responses; removed when the server stops.
    cache_dir = node_cache.create(settings.cache_dir)
    settings = dataclasses.replace(
        settings,
        cache_path=cache_dir if settings.cache_enabled else None,
        responses_path=settings.responses_store_dir or os.path.join(cache_dir, "responses"),
        signatures_path=os.path.join(cache_dir, "signatures"),
    )
    if settings.redis_url is not None:  # the workers name the node as the agent does
        settings = dataclasses.replace(settings, node_id=node_id_of(settings))
    removed = shm.clean_stale_segments()
    if removed:
        logger.info("removed %d shared-memory file(s) of stopped servers", len(removed))
    # Node-wide state (token buckets, stats): the workers attach to it by name.
    segment = shm.create_segment(node.node_layout(settings))
    settings = dataclasses.replace(settings, shm_name=segment.name)
    os.environ[WORKER_SETTINGS_ENV] = settings_to_worker_env(settings)
    # Spawned (not forked) workers: a forked worker inherits the main process's signal
    # handlers, so a SIGTERM that lands before it installs its own is swallowed and the
    # shutdown waits for it forever; a spawned one simply ends.
    multiprocessing.set_start_method("spawn", force=True)
    max_connections = connection_limit(settings.client_max_connections)
    server = Server(
        "aigateway.app:create_worker_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        # Chosen, not defaulted (docs/benchmarks.md, issue 19): the single-threaded runtime
        # cost the same CPU per cache hit as the multi-threaded one, and Granian's Rust
        # task hands the app a stand-in task whose cancel() does nothing, which the body
        # deadline (408) and the cancelling of work for a client that left rely on.
        runtime_mode=RuntimeModes.mt,
        task_impl=TaskImpl.asyncio,
        # HTTP/1.1 only: hyper's header timeout then runs from the moment a connection is
        # accepted (in "auto" mode no timer runs while it sniffs for HTTP/2, so a client
        # that sends nothing was held for ever). The same timer bounds a keep-alive
        # connection's idle time until its next request head is complete.
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.client_header_timeout_s * 1000)),
            max_buffer_size=MAX_HEAD_BYTES,
        ),
        # Granian holds one permit per open connection ("backpressure"); its default,
        # backlog / workers (1,024 here), let ~2,050 idle clients take a 2-worker node.
        backpressure=max_connections,
        backlog=LISTEN_BACKLOG,
        log_level=LogLevels(settings.log_level if settings.log_level != "critical" else "error"),
        log_dictconfig=log_config,
        respawn_failed_workers=True,
        # On SIGTERM: stop accepting, let in-flight (and queued) requests finish for up to
        # DRAIN_TIMEOUT_SEC, then stop the workers that are still busy.
        workers_kill_timeout=max(1, math.ceil(settings.drain_timeout_s)),
    )
    agent = start_agent(settings, segment)  # with REDIS_URL: the node joins the others
    try:
        server.serve()
    finally:
        if agent is not None:
            agent.stop()
        if mock is not None:
            mock.stop()
        if cache_dir is not None:
            node_cache.remove(cache_dir)
        segment.close()
        segment.unlink()
    logger.info("aigateway stopped")
    return 0


def connection_limit(wanted: int) -> int:
    """Client connections per worker: ``wanted``, within what the file-descriptor limit
    allows once its soft value is raised to the hard one (spawned workers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = needed if hard == resource.RLIM_INFINITY else min(hard, max(soft, needed))
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError) as exc:
                logger.warning("could not raise the open-file limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    allowed = max(16, soft - FD_RESERVE)
    logger.warning(
        "CLIENT_MAX_CONNECTIONS=%d needs %d open files per worker but the limit is %d "
        "(ulimit -n, hard %s): each worker holds at most %d client connections",
        wanted,
        needed,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        allowed,
    )
    return allowed


def port_in_use(host: str, port: int) -> str | None:
    """Why the gateway could not listen on ``host:port``, or None: one line up front
    instead of a trace from every worker (Granian binds with SO_REUSEPORT, so a port held
    by another aigateway is found the same way)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def wants_mock_provider(settings: Settings) -> bool:
    """The demo mode: no built-in provider has a key or a base URL of its own."""
    return all(p.api_key is None and p.default_base_url for p in settings.built_in)


def route_to_mock(settings: Settings, url: str) -> Settings:
    """Every built-in provider pointed at the mock's route for its wire format."""
    routes = {p.name: {"base_url": url + MOCK_PATHS[p.kind]} for p in settings.built_in}
    return dataclasses.replace(settings.with_providers(routes), mock_provider=True)


def _and(words: Sequence[str]) -> str:
    """``a, b and c``."""
    return " and ".join(filter(None, (", ".join(words[:-1]), words[-1]))) if words else ""


@dataclasses.dataclass
class MockProviderProcess:
    """The bundled mock provider, run beside the gateway as its demo upstream."""

    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, host: str, timeout_s: float = 15.0) -> MockProviderProcess:
        """Start it on a free port and wait for its ready line, which names the port."""
        # Its complaints go to a scratch file, shown only if it fails to start.
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [sys.executable, "-m", "aigateway.testing.mock_provider",
                 "--host", host, "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=errors,
            )  # fmt: skip
            assert process.stdout is not None
            ready = _read_line(process.stdout, timeout_s)
            if not ready.startswith(MOCK_READY_PREFIX):
                process.kill()
                process.wait()
                errors.seek(0)
                detail = errors.read().decode(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError("the bundled mock provider did not start: " + " | ".join(detail))
        return cls(process, ready.removeprefix(MOCK_READY_PREFIX).strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _read_line(stream: IO[bytes], timeout_s: float) -> str:
    """One line from a child's stdout, or "" when none comes in time."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s).decode(errors="replace")
    except queue.Empty:
        return ""
