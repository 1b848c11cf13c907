"""Providers that answer badly: the client gets a clear answer, the worker stays small.

A real gateway (one worker, the cache on as by default, ``MAX_RESPONSE_BYTES`` of 8 MB) in
front of the bundled mock provider, whose faults (in the request's ``metadata``) make huge
answers, odd ``usage`` values, malformed answers and malformed stream events.

* An answer larger than ``MAX_RESPONSE_BYTES`` is a 502, read no further than the limit.
* Odd ``usage`` never fails a request: the answer is served, the cache clamps or skips.
* A malformed answer is the provider's failure (502); a malformed stream event ends the
  stream with the documented error event, on the OpenAI and the native API alike.
* Every cached answer carries its usage, also one first streamed without
  ``stream_options.include_usage``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from servers import Gateway, MockProvider, chat_body
from test_hostile_streams import WORKER_LIMIT_MB, with_fault, worker_rss_mb

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
NATIVE = "/v1/chat"


@pytest.fixture(scope="module")
def gateway(mock_provider: MockProvider) -> Iterator[Gateway]:
    server = Gateway(
        mock_provider,
        MAX_WORKERS="1",
        CACHE_ENABLED="true",
        OPENAI_RPS="100000",
        MAX_RESPONSE_BYTES=str(8 * 1024 * 1024),
    )
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def http(gateway: Gateway, mock: MockProvider) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def ask(http: httpx.Client, text: str, fault: dict[str, Any], **extra: Any) -> httpx.Response:
    return http.post(CHAT, json=with_fault(chat_body(text, **extra), fault))


def events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


# --- huge answers ----------------------------------------------------------------------


def test_an_answer_over_max_response_bytes_is_a_502_and_the_worker_stays_small(
    gateway: Gateway, http: httpx.Client
) -> None:
    peak = [worker_rss_mb(gateway)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], worker_rss_mb(gateway))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = ask(http, "a 60 MB answer", {"reply_mb": 60})
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "provider_error" and "larger than the limit" in error["message"]
    assert peak[0] < WORKER_LIMIT_MB


def test_a_large_answer_under_the_limit_is_served_but_not_cached(http: httpx.Client) -> None:
    first = ask(http, "a 3 MB answer", {"reply_mb": 3})
    assert first.status_code == 200
    assert len(first.json()["choices"][0]["message"]["content"]) == 3_000_000
    again = ask(http, "a 3 MB answer", {"reply_mb": 3})
    assert again.headers["x-aigateway-cache"] == "miss"  # past CACHE_MAX_ENTRY_BYTES


def test_a_huge_stream_past_the_cache_entry_limit_is_relayed_whole_and_not_cached(
    http: httpx.Client,
) -> None:
    body = chat_body("a 5 MB stream", stream=True)
    with http.stream("POST", CHAT, json=with_fault(body, {"reply_mb": 5})) as response:
        text = b"".join(response.iter_bytes())
    assert text.endswith(b"data: [DONE]\n\n")
    again = ask(http, "a 5 MB stream", {"reply_mb": 5}, stream=True)
    assert again.headers["x-aigateway-cache"] == "miss"


# --- odd usage -------------------------------------------------------------------------

ODD_USAGE = {
    "float": {"prompt_tokens": 12.0, "completion_tokens": 3, "total_tokens": 15.0},
    "negative": {"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2},
    "above 2^32": {"prompt_tokens": 2**40, "completion_tokens": 2**33, "total_tokens": 2**41},
    "fraction": {"prompt_tokens": 1.5, "completion_tokens": "3", "total_tokens": None},
}
NOT_AN_OBJECT = {"string": "nope", "list": [1, 2], "number": 12.0}


@pytest.mark.parametrize("usage", ODD_USAGE.values(), ids=ODD_USAGE.keys())
def test_an_answer_with_odd_usage_counts_is_served_and_cached(
    http: httpx.Client, usage: Any
) -> None:
    text = f"odd usage {orjson.dumps(usage).decode()}"
    first = ask(http, text, {"usage": usage})
    assert first.status_code == 200
    assert first.json()["usage"] == usage  # the provider's answer, as it came
    again = ask(http, text, {"usage": usage})
    assert again.headers["x-aigateway-cache"] == "hit"
    assert again.json()["usage"] == usage
    streamed = ask(http, text + " streamed", {"usage": usage}, stream=True,
                   stream_options={"include_usage": True})  # fmt: skip
    assert streamed.status_code == 200 and events(streamed)[-1] == "[DONE]"


@pytest.mark.parametrize("usage", NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
def test_an_answer_whose_usage_is_not_an_object_is_served_but_never_cached(
    http: httpx.Client, usage: Any
) -> None:
    text = f"usage that is not an object {usage!r}"
    first = ask(http, text, {"usage": usage})
    assert first.status_code == 200 and first.json()["usage"] == usage
    assert ask(http, text, {"usage": usage}).headers["x-aigateway-cache"] == "miss"
    streamed = ask(http, text, {"usage": usage}, stream=True,
                   stream_options={"include_usage": True})  # fmt: skip
    assert streamed.status_code == 200 and events(streamed)[-1] == "[DONE]"


# --- malformed answers and events --------------------------------------------------------


@pytest.mark.parametrize("choices", [[None], "nope", [], [{"message": "hi"}]])
@pytest.mark.parametrize("route", [CHAT, NATIVE])
def test_a_malformed_answer_is_a_502(
    http: httpx.Client, mock: MockProvider, route: str, choices: Any
) -> None:
    mock.faults({"answer_patch": {"choices": choices}})  # the next provider call's fault
    response = http.post(route, json=chat_body(f"malformed {choices!r} on {route}"))
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "provider_error"


NOT_TEXT = {
    "content": {"choices": [{"index": 0, "message": {"role": "assistant", "content": 5}}]},
    "parts": {"choices": [{"index": 0, "message": {"role": "assistant", "content": ["a"]}}]},
    "finish_reason": {"choices": [{"index": 0, "message": {"role": "assistant",
                                                          "content": "hi"}, "finish_reason": 7}]},
    "id": {"id": None},
    "model": {"model": 5},
}  # fmt: skip


@pytest.mark.parametrize("patch", NOT_TEXT.values(), ids=NOT_TEXT.keys())
def test_a_native_answer_whose_text_fields_are_not_text_is_a_502(
    http: httpx.Client, mock: MockProvider, patch: dict[str, Any]
) -> None:
    # The native answer promises id, model, content and finish_reason as text.
    mock.faults({"answer_patch": patch})
    response = http.post(NATIVE, json=chat_body(f"native fields not text {patch!r}"))
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "provider_error"


@pytest.mark.parametrize("raw", ["{not json", "42", '"text"', "[1]"])
@pytest.mark.parametrize("route", [CHAT, NATIVE])
def test_a_malformed_stream_event_ends_the_stream_with_an_error_event(
    http: httpx.Client, mock: MockProvider, route: str, raw: str
) -> None:
    mock.faults({"raw_event": raw, "raw_event_after_chunks": 2})
    body = chat_body(f"malformed event {raw} on {route}", stream=True)
    with http.stream("POST", route, json=body) as response:
        assert response.status_code == 200
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    last = orjson.loads(data[-1])
    assert last["error"]["type"] == "provider_error"
    assert "[DONE]" not in data
    again = http.post(route, json=chat_body(f"malformed event {raw} on {route}"))
    assert again.headers["x-aigateway-cache"] == "miss"  # the broken stream was not stored


# --- usage on cached answers ---------------------------------------------------------------


def test_a_stream_without_include_usage_is_cached_with_its_usage(
    http: httpx.Client, mock: MockProvider
) -> None:
    body = chat_body("cache me with my usage", stream=True)
    streamed = http.post(CHAT, json=body)
    chunks = [orjson.loads(e) for e in events(streamed)[:-1]]
    assert all("usage" not in chunk for chunk in chunks)  # the client did not ask for it
    assert all(chunk["choices"] for chunk in chunks)
    sent = mock.stats()["last_requests"][-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}  # but the gateway did
    hit = http.post(CHAT, json=chat_body("cache me with my usage"))
    assert hit.headers["x-aigateway-cache"] == "hit"
    assert hit.json()["usage"]["total_tokens"] > 0
    replayed = http.post(CHAT, json={**body, "stream_options": {"include_usage": True}})
    assert replayed.headers["x-aigateway-cache"] == "hit"
    assert orjson.loads(events(replayed)[-2])["usage"] == hit.json()["usage"]
