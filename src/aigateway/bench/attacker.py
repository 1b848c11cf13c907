"""The hostile clients of the ``hostile`` scenario, as one process:
``python -m aigateway.bench.attacker --port P --idle N --slowloris M --slow-readers K``.

* idle: connections that send nothing;
* slowloris: connections that send a request head a byte every ``--drip-s`` seconds
  and never finish it;
* slow readers: streamed chat completions read at ``--read-bps`` bytes a second through
  a small receive buffer, one after another, so the gateway must hold (or push back on)
  what the provider sends faster than the client takes it.

Every connection the gateway closes is opened again at once: the counts are *held* for
the whole run, as an attacker would. Once the first round is open it prints one line
``ATTACKER_READY {...}``; on SIGTERM or SIGINT it closes everything and prints
``ATTACKER_SUMMARY {...}``: the counts, how many connections it opened, how many the
gateway closed, connection failures, the fewest connections open at any sampled second,
and what the slow readers received.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson

from aigateway.bench import bodies

READY = "ATTACKER_READY "
SUMMARY = "ATTACKER_SUMMARY "
HOST = "127.0.0.1"
OPEN_WAVE = 500  # connections opened at once: the listen backlog is finite
SLOW_HEAD = b"GET /health HTTP/1.1\r\nhost: gateway\r\nuser-agent: slowloris\r\n"
# A 200 MB stream (the mock writes it piece by piece): a reader that drains it slowly must
# slow the provider down rather than fill the worker's memory.
SLOW_READER_MB = 200
SLOW_READER_BODY = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "slow reader"}],
        "metadata": {"mock_fault": orjson.dumps({"reply_mb": SLOW_READER_MB}).decode()},
    }
)
RECEIVE_BUFFER = 4096


@dataclass
class Counts:
    opened: int = 0
    closed_by_server: int = 0
    connect_errors: int = 0
    open_now: int = 0
    fewest_open: int | None = None
    slow_streams: int = 0
    slow_bytes: int = 0


async def _open(port: int, counts: Counts) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts.connect_errors += 1
            await asyncio.sleep(0.5)
            continue
        counts.opened += 1
        counts.open_now += 1
        return reader, writer


def _closed(writer: asyncio.StreamWriter, counts: Counts, by_server: bool) -> None:
    counts.open_now -= 1
    if by_server:
        counts.closed_by_server += 1
    writer.close()


async def hold_idle(port: int, counts: Counts, first: asyncio.Future[None]) -> None:
    reader, writer = await _open(port, counts)
    first.set_result(None)
    while True:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # only the server closing ends it
        _closed(writer, counts, by_server=True)
        reader, writer = await _open(port, counts)


async def hold_slowloris(
    port: int, drip_s: float, counts: Counts, first: asyncio.Future[None]
) -> None:
    reader, writer = await _open(port, counts)
    first.set_result(None)
    await asyncio.sleep(random.uniform(0, drip_s))  # spread the drips over the interval
    while True:
        head = SLOW_HEAD + b"x-padding: " + b"a" * 100_000
        try:
            for byte in head:
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(drip_s)
        except ConnectionError:
            pass
        _closed(writer, counts, by_server=True)
        reader, writer = await _open(port, counts)


async def slow_reader(port: int, read_bps: float, counts: Counts) -> None:
    request = (
        b"POST " + bodies.CHAT_PATH.encode() + b" HTTP/1.1\r\nhost: gateway\r\n"
        b"authorization: Bearer " + bodies.API_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(SLOW_READER_BODY)).encode() + b"\r\n\r\n"
    ) + SLOW_READER_BODY
    loop = asyncio.get_running_loop()
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (HOST, port))
        except OSError:
            sock.close()
            counts.connect_errors += 1
            await asyncio.sleep(0.5)
            continue
        reader, writer = await asyncio.open_connection(sock=sock, limit=RECEIVE_BUFFER)
        counts.slow_streams += 1
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(1024):
                counts.slow_bytes += len(chunk)
                await asyncio.sleep(len(chunk) / read_bps)
        writer.close()


async def attack(args: argparse.Namespace, stop: asyncio.Event) -> Counts:
    counts = Counts()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    plan = [("idle", i) for i in range(args.idle)] + [("slow", i) for i in range(args.slowloris)]
    started = time.monotonic()
    for at in range(0, len(plan), OPEN_WAVE):
        firsts: list[asyncio.Future[None]] = []
        for kind, _ in plan[at : at + OPEN_WAVE]:
            first: asyncio.Future[None] = loop.create_future()
            firsts.append(first)
            holder = (
                hold_slowloris(args.port, args.drip_s, counts, first)
                if kind == "slow"
                else hold_idle(args.port, counts, first)
            )
            tasks.append(asyncio.create_task(holder))
        await asyncio.gather(*firsts)
    for _ in range(args.slow_readers):
        tasks.append(asyncio.create_task(slow_reader(args.port, args.read_bps, counts)))
    ready = {"open": counts.open_now, "opening_s": round(time.monotonic() - started, 3)}
    print(READY + orjson.dumps(ready).decode(), flush=True)
    while not stop.is_set():
        fewest, held = counts.fewest_open, counts.open_now
        counts.fewest_open = held if fewest is None else min(fewest, held)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def _raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigateway.bench.attacker")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=_non_negative_int, default=10_000)
    parser.add_argument("--slowloris", type=_non_negative_int, default=2_000)
    parser.add_argument("--slow-readers", type=_non_negative_int, default=1)
    parser.add_argument("--drip-s", type=_positive_float, default=1.0)
    parser.add_argument("--read-bps", type=_positive_float, default=16_384.0)
    args = parser.parse_args(argv)
    _raise_open_file_limit(args.idle + args.slowloris + args.slow_readers + 256)

    async def run() -> Counts:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await attack(args, stop)

    counts = asyncio.run(run())
    summary = {
        "idle": args.idle,
        "slowloris": args.slowloris,
        "slow_readers": args.slow_readers,
        **asdict(counts),
    }
    print(SUMMARY + orjson.dumps(summary).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
