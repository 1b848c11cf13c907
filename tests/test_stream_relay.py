"""The stream relay: provider events out as OpenAI events, errors as a last event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import orjson
import pytest

from aigateway.core.accounting import Accounting
from aigateway.core.dispatch import Answer
from aigateway.core.observer import RequestObserver, RequestRecord, StreamRecord
from aigateway.core.streaming import relay_stream
from aigateway.providers.openai import OpenAIAdapter
from aigateway.wire import ApiRequest

pytestmark = pytest.mark.anyio


class RecordedResponse:
    """A provider's streamed answer, as bytes already received."""

    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream"}
    closed = False

    async def read(self, timeout_s: float) -> bytes:
        return b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield b""

    async def close(self) -> None:
        self.closed = True


def chunk(text: str) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


class StreamsSeen:
    """A request trace that keeps only what the relay reports at a stream's end."""

    def __init__(self) -> None:
        self.streams: list[StreamRecord] = []

    def stream_ended(self, stream: StreamRecord) -> None:
        self.streams.append(stream)


async def relay(first: bytes, trace: StreamsSeen | None = None) -> list[bytes]:
    adapter = OpenAIAdapter("openai", "http://provider/v1", None, "OPENAI_API_KEY")
    request = ApiRequest("chat", "gpt-4o-mini", {}, b"{}", stream=True)
    response = RecordedResponse()
    answer = Answer(response, first, None, 1)
    translator = adapter.chat_stream(request, "m")
    observer = RequestObserver(Accounting.private(), RequestRecord("req"), trace)  # type: ignore[arg-type]
    out = [piece async for piece in relay_stream(answer, adapter, translator, observer)]
    assert response.closed
    return b"".join(out).split(b"\n\n")[:-1]


async def test_events_are_relayed_and_done_is_sent_once() -> None:
    events = await relay(chunk("Hel") + chunk("lo") + b"data: [DONE]\n\n")
    assert events[-1] == b"data: [DONE]"
    assert len(events) == 3


async def test_content_before_an_error_in_the_same_read_is_not_lost() -> None:
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    events = await relay(chunk("kept") + error)
    assert orjson.loads(events[0][6:])["choices"][0]["delta"]["content"] == "kept"
    assert b"error" in events[1]
    assert len(events) == 2  # no [DONE] after an error


async def test_the_relay_reports_the_first_token_the_usage_and_how_the_stream_ended() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    end = b'data: {"model":"m-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    usage = (
        b'data: {"model":"m-1","choices":[],'
        b'"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}\n\n'
    )
    seen = StreamsSeen()
    await relay(role + chunk("Hi") + end + usage + b"data: [DONE]\n\n", seen)
    (stream,) = seen.streams
    assert stream.first_token is not None and stream.first_token >= stream.started
    assert (stream.input_tokens, stream.output_tokens) == (7, 3)
    assert stream.finish_reasons == ["stop"]
    assert stream.response_model == "m-1"
    assert stream.outcome == "complete"


async def test_a_stream_with_an_error_event_is_reported_as_ended_in_error() -> None:
    seen = StreamsSeen()
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    await relay(chunk("kept") + error, seen)
    assert seen.streams[0].outcome == "error"
