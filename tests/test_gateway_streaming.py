"""Streaming: events relayed as they arrive, buffering disabled, clean ends."""

from __future__ import annotations

import itertools
import time

import httpx
import orjson
import pytest

from servers import Gateway, MockProvider, chat_body

pytestmark = pytest.mark.e2e


def _data_lines(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_stream_headers_disable_buffering(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        response.read()


def test_chunks_are_relayed_as_they_arrive(client: httpx.Client, mock: MockProvider) -> None:
    mock.faults({"stream_chunk_delay_ms": 100})
    arrivals = []
    body = chat_body("one two three four", stream=True)
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for gap in gaps if gap >= 0.05) >= 3  # not buffered into one blob


def test_every_event_is_a_complete_openai_chunk_and_done_comes_last(
    client: httpx.Client,
) -> None:
    body = chat_body("check each event", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        events = _data_lines(response)
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_a_client_that_leaves_mid_stream_does_not_hurt_the_gateway(
    gateway: Gateway, mock: MockProvider
) -> None:
    mock.faults(default={"stream_chunk_delay_ms": 200})
    body = chat_body("a long answer the client will not wait for", stream=True)
    for _ in range(4):
        with (
            gateway.client() as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            next(response.iter_lines())  # read a little, then hang up
    mock.faults(default=None)
    with gateway.client() as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert "Traceback" not in gateway.log()
