"""Slow and idle clients cannot starve the gateway (issue 13, defect 1).

Real gateways (Granian, ``MAX_WORKERS=2`` unless a test needs one worker) and raw TCP
clients (asyncio streams, no HTTP library between us and the wire):

* a connection that sends nothing, one that sends its head a byte at a time (slowloris)
  and an idle keep-alive connection are closed once ``CLIENT_HEADER_TIMEOUT_SEC`` has
  passed;
* a body sent halfway gets a 408 in OpenAI's error shape once ``CLIENT_BODY_TIMEOUT_SEC``
  has passed, and its connection is closed;
* a client that leaves mid-upload leaves no request behind;
* while all of these are held, a normal client is answered at once; with the default
  limits, thousands of idle and slowloris connections are held without starving anyone;
* past ``CLIENT_MAX_CONNECTIONS`` a worker stops accepting: a newcomer waits in the
  listen backlog until the header timeout frees a slot.

Waits are bounded generously (CI has two busy cores); what is asserted is what happened
(closed or not, which status, in which order), never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from aigateway.config import ConfigError, load_settings
from servers import Gateway, MockProvider, _Process, chat_body, free_port, gateway_env

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
# Generous bound on "closed after the timeout": the timeout plus time for a busy machine.
CLOSE_BOUND_S = 15.0
# A normal client held up behind hostile ones would wait for ever on main; here it must be
# answered well before anything hostile is let go.
PROMPT_S = 10.0


@pytest.fixture(scope="module")
def strict_gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    """Two workers with one-second header and body timeouts."""
    server = Gateway(
        mock_provider,
        CLIENT_HEADER_TIMEOUT_SEC=str(HEADER_TIMEOUT_S),
        CLIENT_BODY_TIMEOUT_SEC=str(BODY_TIMEOUT_S),
    )
    yield server
    assert server.stop() == 0, server.log()


def _port(gateway: Gateway) -> int:
    return gateway.port


# --- raw clients ----------------------------------------------------------------------------

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int) -> Stream:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed_within(reader: asyncio.StreamReader, bound_s: float) -> bytes | None:
    """Everything the server sent until it closed the connection, or None if it is still
    open after ``bound_s``."""
    received = bytearray()
    deadline = time.monotonic() + bound_s
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not chunk:
                return bytes(received)
            received += chunk
    except TimeoutError:
        return None
    except ConnectionError:
        return bytes(received)


def _request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: gateway"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _drip(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """Send ``data`` one byte at a time, then keep sending header bytes, until cut off."""
    with contextlib.suppress(ConnectionError):
        for byte in data + b"x-slow: " + b"a" * 10_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)


async def _normal_chat(port: int, bound_s: float = PROMPT_S) -> int:
    """A well-behaved client's chat completion on a fresh connection: its status."""
    async with asyncio.timeout(bound_s):
        reader, writer = await _connect(port)
        try:
            writer.write(_request("POST", "/v1/chat/completions", orjson.dumps(chat_body())))
            status_line = await reader.readline()
            return int(status_line.split()[1])
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def _held(port: int, idle: int, slowloris: int = 0) -> AsyncIterator[list[Stream]]:
    """``idle`` connections that send nothing and ``slowloris`` ones that send a request
    head a byte a second, all open while the block runs."""
    streams: list[Stream] = []
    drips: list[asyncio.Task[None]] = []
    try:
        for start in range(0, idle + slowloris, 200):  # in waves: the backlog is finite
            count = min(200, idle + slowloris - start)
            streams += await asyncio.gather(*(_connect(port) for _ in range(count)))
        for _, writer in streams[idle:]:
            head = b"GET /health HTTP/1.1\r\nhost: gateway\r\n"
            drips.append(asyncio.create_task(_drip(writer, head, 1.0)))
        yield streams
    finally:
        for task in drips:
            task.cancel()
        for _, writer in streams:
            writer.close()
        await asyncio.gather(*drips, return_exceptions=True)


def _raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# --- each kind of hostile connection is let go ------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    strict_gateway: Gateway,
) -> None:
    async def scenario() -> None:
        reader, writer = await _connect(_port(strict_gateway))
        assert await _normal_chat(_port(strict_gateway)) == 200  # served while it is held
        assert await _closed_within(reader, CLOSE_BOUND_S) == b""
        writer.close()

    asyncio.run(scenario())


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout(
    strict_gateway: Gateway,
) -> None:
    async def scenario() -> None:
        reader, writer = await _connect(_port(strict_gateway))
        drip = asyncio.create_task(_drip(writer, b"GET /health HTTP/1.1\r\nhost: x\r\n", 0.2))
        assert await _normal_chat(_port(strict_gateway)) == 200
        answer = await _closed_within(reader, CLOSE_BOUND_S)
        drip.cancel()
        writer.close()
        # closed before the head was complete: no answer to the request it never finished
        assert answer is not None and b"200 OK" not in answer

    asyncio.run(scenario())


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(
    strict_gateway: Gateway,
) -> None:
    async def scenario() -> None:
        reader, writer = await _connect(_port(strict_gateway))
        writer.write(_request("GET", "/health"))
        status_line = await asyncio.wait_for(reader.readline(), PROMPT_S)
        assert b" 200 " in status_line
        rest = await _closed_within(reader, CLOSE_BOUND_S)  # the rest of the answer, then EOF
        assert rest is not None and rest.endswith(b"}")
        writer.close()

    asyncio.run(scenario())


def test_a_body_sent_halfway_gets_408_and_its_connection_is_closed(
    strict_gateway: Gateway,
) -> None:
    async def scenario() -> None:
        reader, writer = await _connect(_port(strict_gateway))
        body = orjson.dumps(chat_body())
        head = _request("POST", "/v1/chat/completions").replace(
            b"content-length: 0", f"content-length: {len(body)}".encode()
        )
        writer.write(head + body[: len(body) // 2])
        assert await _normal_chat(_port(strict_gateway)) == 200
        answer = await _closed_within(reader, CLOSE_BOUND_S)
        writer.close()
        assert answer is not None, "the connection is still open"
        head_part, _, payload = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in head_part.lower()
        error = orjson.loads(payload)["error"]
        assert error["code"] == "request_body_timeout"
        assert error["type"] == "invalid_request_error" and "in time" in error["message"]

    asyncio.run(scenario())


def test_a_body_trickling_in_past_the_deadline_also_gets_408(strict_gateway: Gateway) -> None:
    """The deadline is for the whole body, not for each chunk: a byte every 0.2 s never
    lets a gap reach the timeout, yet the request ends."""

    async def scenario() -> None:
        reader, writer = await _connect(_port(strict_gateway))
        head = _request("POST", "/v1/chat/completions").replace(
            b"content-length: 0", b"content-length: 100000"
        )
        writer.write(head)
        drip = asyncio.create_task(_drip(writer, b"{", 0.2))
        answer = await _closed_within(reader, CLOSE_BOUND_S)
        drip.cancel()
        writer.close()
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 ")

    asyncio.run(scenario())


def _others_in_flight(gateway: Gateway) -> int:
    """Requests in flight on the node, besides the one asking."""
    stats = httpx.get(gateway.url + "/admin/stats", timeout=PROMPT_S).json()
    return int(stats["requests"]["in_flight"]) - 1


def test_clients_that_leave_mid_upload_leave_no_request_behind(strict_gateway: Gateway) -> None:
    async def scenario() -> None:
        port = _port(strict_gateway)
        for _ in range(20):
            _, writer = await _connect(port)
            writer.write(
                _request("POST", "/v1/chat/completions").replace(
                    b"content-length: 0", b"content-length: 5000"
                )
                + b'{"model": "gpt-4o-mini", "mess'
            )
            await writer.drain()
            writer.transport.abort()  # gone, mid-body
        assert await _normal_chat(port) == 200

    asyncio.run(scenario())
    deadline = time.monotonic() + CLOSE_BOUND_S
    while _others_in_flight(strict_gateway) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _others_in_flight(strict_gateway) == 0


# --- how many connections a worker holds ------------------------------------------------------


def test_thousands_of_held_connections_do_not_starve_a_two_worker_node(
    mock_provider: MockProvider,
) -> None:
    """Default limits and timeouts (30 s): 2,300 idle and 200 slowloris connections stay
    open for the whole test, more than the 2 x 1,024 Granian held before, and a
    newcomer is still answered at once."""
    _raise_open_file_limit(4096)
    gateway = Gateway(mock_provider)
    try:

        async def scenario() -> None:
            port = _port(gateway)
            async with _held(port, idle=2300, slowloris=200):
                statuses = await asyncio.gather(*(_normal_chat(port) for _ in range(10)))
                assert statuses == [200] * 10

        asyncio.run(scenario())
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_past_the_connection_limit_a_newcomer_waits_until_the_header_timeout_frees_a_slot(
    mock_provider: MockProvider,
) -> None:
    limit = 16
    gateway = Gateway(
        mock_provider,
        MAX_WORKERS="1",
        CLIENT_MAX_CONNECTIONS=str(limit),
        CLIENT_HEADER_TIMEOUT_SEC="2",
    )
    try:

        async def scenario() -> None:
            port = _port(gateway)
            async with _held(port, idle=limit) as streams:
                status = await _normal_chat(port, bound_s=CLOSE_BOUND_S)
                # answered, but only once the worker had let idle connections go
                closed = [await _closed_within(reader, 0.01) for reader, _ in streams]
                assert status == 200
                assert any(answer == b"" for answer in closed)

        asyncio.run(scenario())
    finally:
        assert gateway.stop() == 0, gateway.log()


# --- open files -------------------------------------------------------------------------------


class _LimitedGateway(_Process):
    """``aigateway serve`` started with an open-file limit of (soft, hard), as on a fresh
    machine where the soft limit is often 1,024."""

    def __init__(self, mock: MockProvider, soft: int, hard: int, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = gateway_env(mock, AI_GATEWAY_PORT=str(self.port), MAX_WORKERS="1", **env)
        start = (
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
            "os.execv(sys.executable, [sys.executable, '-m', 'aigateway.cli', 'serve'])"
        )
        super().__init__([sys.executable, "-c", start], full_env, self.url + "/health")

    def worker_soft_limits(self) -> list[int]:
        limits = []
        for child in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
                        if line.startswith("Max open files"):
                            limits.append(int(line.split()[3]))
        return limits


def test_a_low_soft_open_file_limit_is_raised_for_the_workers(mock_provider: MockProvider) -> None:
    """``aigateway serve`` raises it as far as the connections need; Granian's import
    (its sysinfo crate) happens to raise it to the hard limit too."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2600:
        pytest.skip(f"the hard open-file limit is {hard}")
    gateway = _LimitedGateway(mock_provider, 1024, hard, CLIENT_MAX_CONNECTIONS="2000")
    try:
        (limit,) = gateway.worker_soft_limits()
        assert limit >= 2000 + 512
        assert "open files" not in gateway.log()  # no warning: the limit could be raised
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_a_hard_open_file_limit_too_low_lowers_the_connections_and_says_so(
    mock_provider: MockProvider,
) -> None:
    gateway = _LimitedGateway(mock_provider, 1024, 1024)
    try:
        log = gateway.log()
        assert "CLIENT_MAX_CONNECTIONS=10000 needs 10512 open files" in log
        assert "each worker holds at most 512 client connections" in log
        assert asyncio.run(_normal_chat(gateway.port)) == 200
    finally:
        assert gateway.stop() == 0, gateway.log()


# --- settings ---------------------------------------------------------------------------------


def test_the_client_limits_have_sane_defaults() -> None:
    settings = load_settings({})
    assert settings.client_header_timeout_s == 30.0
    assert settings.client_body_timeout_s == 60.0
    assert settings.client_max_connections == 10_000


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("CLIENT_HEADER_TIMEOUT_SEC", "0"),
        ("CLIENT_HEADER_TIMEOUT_SEC", "-1"),
        ("CLIENT_HEADER_TIMEOUT_SEC", "nan"),
        ("CLIENT_HEADER_TIMEOUT_SEC", "3601"),
        ("CLIENT_BODY_TIMEOUT_SEC", "0"),
        ("CLIENT_BODY_TIMEOUT_SEC", "soon"),
        ("CLIENT_MAX_CONNECTIONS", "15"),
        ("CLIENT_MAX_CONNECTIONS", "1.5"),
        ("CLIENT_MAX_CONNECTIONS", "2000000"),
    ],
)
def test_bad_client_limits_are_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings({name: raw})
    assert exc.value.name == name
