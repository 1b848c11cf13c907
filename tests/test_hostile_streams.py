"""Slow readers and clients that leave: memory stays bounded, nobody pays for unread answers.

A real gateway (one worker, the cache on as by default) in front of the bundled mock
provider, whose faults make huge and long slow streams and record how far each stream got
and whether its client cut it (``/_mock/stats``, ``streams``).  The worker's memory is read
from ``/proc``; the requests the gateway counted from ``/metrics``.

* A slow reader of a huge stream slows the provider down (backpressure) instead of filling
  the worker's memory, and a reader of a shared stream that falls too far behind is dropped
  with an error event while the others read on.
* A client that leaves lets go of its provider call: the provider stream is cut, the request
  is counted as 499, and the partial answer is not cached.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MB = 1_000_000
WORKER_LIMIT_MB = 150  # the bound for a worker's resident memory


@pytest.fixture(scope="module")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    server = Gateway(
        mock_provider,
        MAX_WORKERS="1",
        CACHE_ENABLED="true",
        REQUEST_TIMEOUT_SEC="60",
        OPENAI_RPS="100000",
        STREAM_MAX_LAG_BYTES=str(1024 * 1024),
    )
    yield server
    assert server.stop() == 0, server.log()


# --- helpers ---------------------------------------------------------------------------


def worker_rss_mb(gateway: Gateway) -> float:
    """The largest resident memory among the gateway's worker processes, in MB."""
    children = [pid for pid in _pids() if _parent(pid) == gateway.process.pid]
    sizes = [_rss_kb(pid) for pid in children]
    assert sizes, "the gateway has no worker process"
    return max(sizes) / 1024


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def requests_counted(gateway: Gateway, status: str) -> float:
    response = httpx.get(gateway.url + "/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "aigateway_requests_total"
        and sample.labels.get("route") == CHAT
        and sample.labels.get("status") == status
    )


def last_stream(mock: MockProvider) -> dict[str, Any]:
    streams = mock.stats()["streams"]
    assert streams, "the provider was never asked for a stream"
    record: dict[str, Any] = streams[-1]
    return record


def with_fault(body: dict[str, Any], fault: dict[str, Any]) -> dict[str, Any]:
    """The body with the mock's fault in ``metadata`` (which the gateway passes on, and
    which is no part of the cache key)."""
    return {**body, "metadata": {"mock_fault": orjson.dumps(fault).decode()}}


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class RawClient:
    """A client on a plain socket with a small receive buffer: it reads when it wants."""

    def __init__(self, gateway: Gateway, body: dict[str, Any], fault: dict[str, Any]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.connect(("127.0.0.1", gateway.port))
        payload = orjson.dumps(with_fault(body, fault))
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + payload)
        self.received = bytearray()

    def read(self, n: int, timeout_s: float = 10.0) -> bytes:
        """Up to ``n`` more bytes, as they come."""
        self.sock.settimeout(timeout_s)
        chunk = self.sock.recv(n)
        self.received += chunk
        return chunk

    def read_all(self, timeout_s: float = 30.0) -> bytes:
        self.sock.settimeout(timeout_s)
        while chunk := self.sock.recv(1 << 20):
            self.received += chunk
            if self.received.endswith(b"0\r\n\r\n"):  # the last chunk of the answer
                break
        return bytes(self.received)

    def close(self) -> None:
        self.sock.close()


# --- slow readers ------------------------------------------------------------------------


def test_a_slow_reader_of_a_huge_stream_slows_the_provider_instead_of_filling_memory(
    gateway: Gateway, mock: MockProvider
) -> None:
    before = worker_rss_mb(gateway)
    client = RawClient(gateway, chat_body("a huge stream", stream=True), {"reply_mb": 64})
    try:
        peak = before
        got = 0
        while got < 2 * MB:  # read 2 MB in small sips, slowly
            got += len(client.read(32 * 1024))
            time.sleep(0.005)
            peak = max(peak, worker_rss_mb(gateway))
        time.sleep(0.5)
        peak = max(peak, worker_rss_mb(gateway))
        stream = last_stream(mock)
        # The provider is held back: it sent little more than the client read and the
        # sockets' buffers hold, not the whole 64 MB the gateway could have buffered.
        assert stream["outcome"] == "running"
        assert stream["sent"] * 16 * 1024 < 32 * MB, stream
    finally:
        client.close()
    assert peak < WORKER_LIMIT_MB, f"worker grew from {before:.0f} MB to {peak:.0f} MB"
    assert peak - before < 40, f"worker grew from {before:.0f} MB to {peak:.0f} MB"
    # Its client gone, the provider's stream is cut at once.
    assert wait_for(lambda: last_stream(mock)["outcome"] == "cut"), last_stream(mock)


def test_a_reader_of_a_shared_stream_that_falls_too_far_behind_is_dropped_with_an_error(
    gateway: Gateway, mock: MockProvider
) -> None:
    # The provider answers after 300 ms, so the second identical request joins the first.
    fault = {"reply_mb": 24, "latency_ms": 300}
    body = chat_body("a shared huge stream", stream=True)
    before = worker_rss_mb(gateway)
    fast = RawClient(gateway, body, fault)
    stalled = RawClient(gateway, body, fault)
    try:
        answer = fast.read_all()
        assert b"data: [DONE]" in answer
        assert answer.count(b'"content":"lorem') > 24 * MB // (16 * 1024) - 10  # all of it
        peak = worker_rss_mb(gateway)
        rest = stalled.read_all()
    finally:
        fast.close()
        stalled.close()
    assert mock.stats()["by_path"]["/v1/chat/completions"] == 1  # one shared provider call
    assert b"client_too_slow" in rest
    assert b"data: [DONE]" not in rest
    assert peak < WORKER_LIMIT_MB, f"worker grew from {before:.0f} MB to {peak:.0f} MB"


# --- clients that leave --------------------------------------------------------------------


def test_a_client_that_leaves_a_stream_cuts_the_provider_and_is_counted_as_499(
    gateway: Gateway, mock: MockProvider
) -> None:
    counted = requests_counted(gateway, "499")
    fault = {"stream_chunks": 200, "stream_chunk_delay_ms": 20}
    body = chat_body("a long slow stream", stream=True)
    client = RawClient(gateway, body, fault)
    while client.received.count(b"chunk ") < 3:  # three chunks in, the client hangs up
        client.read(4096)
    left = time.monotonic()
    client.close()
    assert wait_for(lambda: last_stream(mock)["outcome"] == "cut"), last_stream(mock)
    stream = last_stream(mock)
    assert stream["sent"] < 100, stream  # cut long before its 200 chunks
    assert stream["ended"] - stream["started"] < 4.0 + (time.monotonic() - left)
    assert wait_for(lambda: requests_counted(gateway, "499") == counted + 1)
    # Nothing of the partial answer was kept: the same request goes to the provider again.
    with gateway.client() as http:
        again = http.post(CHAT, json=chat_body("a long slow stream"))
    assert again.status_code == 200
    assert again.headers["x-aigateway-cache"] == "miss"
    assert "499" in gateway.log() and "Traceback" not in gateway.log()


def test_a_client_that_leaves_while_the_provider_thinks_cancels_the_call(
    gateway: Gateway, mock: MockProvider
) -> None:
    counted = requests_counted(gateway, "499")
    fault = {"latency_ms": 800, "stream_chunks": 50, "stream_chunk_delay_ms": 20}
    client = RawClient(gateway, chat_body("nobody will wait for this", stream=True), fault)
    time.sleep(0.3)  # the provider is still thinking
    client.close()
    assert wait_for(lambda: requests_counted(gateway, "499") == counted + 1, timeout_s=5)
    time.sleep(1.0)  # long after the provider would have started its answer
    assert mock.calls() == 1
    assert mock.stats()["streams"] == []  # the call was cancelled before it answered
    with gateway.client() as http:
        again = http.post(CHAT, json=chat_body("nobody will wait for this"))
    assert again.headers["x-aigateway-cache"] == "miss"  # the abandoned answer was not stored
