"""A request identical to one whose large stream a client holds without reading is served.

A real gateway (two workers, the cache on, small stream window and cache entry limit,
a 5 s deadline) in front of the bundled mock provider, whose ``reply_mb`` fault makes a
large answer. Client S asks for it as a stream on a plain socket with a tiny receive
buffer and never reads: its shared stream stalls once the sockets' buffers are full,
long past the start the window keeps for late followers. Identical requests sent next,
streamed or not, in whichever worker they land, do not wait behind S: they make their
own provider call and get their answer, while S still holds its stream.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
KIB = 1024
FAULT = orjson.dumps({"reply_mb": 8}).decode()


@pytest.fixture(scope="module")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    server = Gateway(
        mock_provider,
        MAX_WORKERS="2",
        CACHE_ENABLED="true",
        REQUEST_TIMEOUT_SEC="5",
        OPENAI_RPS="100000",
        STREAM_MAX_LAG_BYTES=str(1024 * KIB),
        CACHE_MAX_ENTRY_BYTES=str(256 * KIB),
    )
    yield server
    assert server.stop() == 0, server.log()


def hold_a_stream(gateway: Gateway, body: dict[str, object]) -> socket.socket:
    """Send the request on a socket with a 4 KiB receive buffer that is never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * KIB)
    sock.connect(("127.0.0.1", gateway.port))
    payload = orjson.dumps(body)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def test_identical_requests_behind_a_stalled_large_stream_get_their_answer(
    gateway: Gateway, mock: MockProvider
) -> None:
    body = {**chat_body("a large answer held by a client who never reads")}
    body["metadata"] = {"mock_fault": FAULT}  # no part of the cache key
    held = hold_a_stream(gateway, {**body, "stream": True})
    try:
        time.sleep(0.5)  # S's stream has begun and filled the sockets' buffers
        # A few of each kind, on new connections: they land in both workers.
        for stream in (False, True, False, True):
            with gateway.client(timeout=20) as http:  # main: no answer until S drains
                if stream:
                    with http.stream("POST", CHAT, json={**body, "stream": True}) as response:
                        text = b"".join(response.iter_bytes())
                else:
                    response = http.post(CHAT, json=body)
                    text = response.content
            assert response.status_code == 200, text[:300]
            assert response.headers["x-aigateway-cache"] == "miss"  # its own provider call
            if stream:
                assert text.endswith(b"data: [DONE]\n\n")
            else:
                assert len(orjson.loads(text)["choices"][0]["message"]["content"]) >= 8_000_000
        # S's call and one of each follower's own: none waited for S's answer.
        assert mock.stats()["by_path"][CHAT] == 5
    finally:
        held.close()
