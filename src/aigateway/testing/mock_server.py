"""Running the mock provider: one process on uvloop, or several sharing the port (SO_REUSEPORT).

With several workers, the kernel spreads connections over independent processes, so the control
API (stats, faults, reset) only sees and affects the process that happens to take the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import FrameType

import uvloop
from aiohttp import web

from aigateway.testing.mock_app import MockOptions, create_mock_app

__all__ = ["serve", "serve_workers"]

SHUTDOWN_TIMEOUT_SECONDS = 0.5
WORKER_START_TIMEOUT_SECONDS = 60.0
PARENT_CHECK_SECONDS = 1.0
_BACKLOG = 4096


async def _serve(
    options: MockOptions,
    host: str,
    port: int,
    reuse_port: bool,
    on_ready: Callable[[int], None],
    stop_with_parent: bool,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(_watch_parent(stop)) if stop_with_parent else None
    runner = web.AppRunner(
        create_mock_app(options),
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        access_log=None,
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=_BACKLOG, reuse_port=reuse_port or None)
        await site.start()
        on_ready(runner.addresses[0][1])
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


async def _watch_parent(stop: asyncio.Event) -> None:
    """Stop a worker whose parent died without stopping it (e.g. SIGKILL): no orphans."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing to await: parent death is polled
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    stop.set()


def serve(
    options: MockOptions,
    host: str,
    port: int,
    on_ready: Callable[[int], None],
    *,
    reuse_port: bool = False,
    stop_with_parent: bool = False,
) -> None:
    """Serve on uvloop until SIGINT/SIGTERM. ``on_ready(bound_port)`` runs once listening.

    ``stop_with_parent``: also stop when the parent process goes away.
    """
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(options, host, port, reuse_port, on_ready, stop_with_parent))


def _worker_main(options: MockOptions, host: str, port: int, ready: Connection) -> None:
    """Entry point of a worker process (spawned; must stay importable at module level)."""

    def report(bound_port: int) -> None:
        ready.send(bound_port)
        ready.close()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C before the loop took over SIGINT
        serve(options, host, port, report, reuse_port=True, stop_with_parent=True)


def _reserve_port(host: str) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket on a free port, for workers to share."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def serve_workers(
    options: MockOptions,
    host: str,
    port: int,
    workers: int,
    on_ready: Callable[[int], None],
) -> int:
    """Run ``workers`` processes on the same port until SIGINT/SIGTERM; returns an exit code.

    ``on_ready(port)`` runs once every worker is listening. If a worker dies, the others are
    stopped and 1 is returned.
    """
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Connection] = []
    reserved = _reserve_port(host) if port == 0 else None
    try:
        if reserved is not None:
            port = reserved.getsockname()[1]
        for number in range(workers):
            receiver, sender = context.Pipe(duplex=False)
            spawned = context.Process(
                target=_worker_main,
                args=(options, host, port, sender),
                name=f"aigateway-mock-{number}",
            )
            spawned.start()
            sender.close()
            processes.append(spawned)
            pipes.append(receiver)

        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        for process, receiver in zip(processes, pipes, strict=True):
            while not receiver.poll(0.05):
                if stop.is_set():
                    return 0
                if not process.is_alive() or time.monotonic() > deadline:
                    return 1
            try:
                receiver.recv()
            except EOFError:
                return 1
        if reserved is not None:
            reserved.close()
        on_ready(port)

        while not stop.wait(0.2):
            if not all(process.is_alive() for process in processes):
                return 1
        return 0
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
        for receiver in pipes:
            receiver.close()
        if reserved is not None:
            reserved.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
