"""Behaviour of the bundled mock LLM provider (``aigateway.testing.mock_provider``).

The mock runs as a real subprocess (``python -m aigateway.testing.mock_provider --port 0``), prints
``mock provider listening on http://HOST:PORT`` and is then exercised over real HTTP with httpx,
exactly as the gateway's tests and benchmarks use it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
READY_PREFIX = "mock provider listening on "
CHAT = "/v1/chat/completions"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


# ------------------------------------------------------------------------------------ harness


@dataclass
class MockServer:
    url: str  # http://127.0.0.1:PORT (the gateway's base URL would be url + "/v1")
    process: subprocess.Popen[str]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def _read_ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"mock provider printed nothing within {timeout}s")
    return process.stdout.readline()


def _stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def run_mock(workdir: Path, *args: str) -> Iterator[MockServer]:
    """Start the mock provider on a free port, yield it once it announced itself, stop it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    stderr_path = workdir / "mock-stderr.txt"
    command = [sys.executable, "-m", "aigateway.testing.mock_provider", "--port", "0", *args]
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        ) as process,
    ):
        try:
            line = _read_ready_line(process, timeout=30)
            assert line.startswith(READY_PREFIX), (line, stderr_path.read_text())
            yield MockServer(line[len(READY_PREFIX) :].strip(), process, stderr_path)
        finally:
            _stop(process)


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    with run_mock(tmp_path_factory.mktemp("mock")) as server:
        yield server


@pytest.fixture
def client(mock: MockServer) -> Iterator[httpx.Client]:
    """A client on a freshly reset mock (counters, recorded requests and faults cleared)."""
    with httpx.Client(base_url=mock.url, timeout=5.0) as http:
        assert http.post("/_mock/reset").json() == {"ok": True}
        yield http


def chat_body(text: str = "Hello mock provider", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def sse_events(raw: str) -> list[str]:
    """The ``data:`` payloads of a server-sent-events body, in order."""
    assert raw.endswith("\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events), events
    return [event[len("data: ") :] for event in events]


def set_faults(client: httpx.Client, **config: Any) -> None:
    response = client.post("/_mock/faults", json=config)
    assert response.status_code == 200, response.text


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/_mock/stats").json()
    return result


# ------------------------------------------------------------------------------ chat completions


def test_chat_reply_is_openai_shaped_and_deterministic(client: httpx.Client) -> None:
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello mock provider"},
        ],
    }
    first = client.post(CHAT, json=body)
    second = client.post(CHAT, json=body)

    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == second.json()  # same request, same reply (id and created included)
    reply = first.json()
    assert reply["id"].startswith("chatcmpl-mock-")
    assert reply["object"] == "chat.completion"
    assert isinstance(reply["created"], int)
    assert reply["model"] == "gpt-4o-mini"
    assert reply["system_fingerprint"] == "fp_mock"
    assert reply["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Mock reply to: Hello mock provider",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    # prompt: (3 words + 3) + (3 words + 3); completion: 6 words
    assert reply["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 6,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_chat_id_depends_on_model_and_messages_only(client: httpx.Client) -> None:
    base = client.post(CHAT, json=chat_body()).json()["id"]
    assert client.post(CHAT, json=chat_body(temperature=1.5)).json()["id"] == base
    assert client.post(CHAT, json=chat_body("Something else")).json()["id"] != base
    assert client.post(CHAT, json={**chat_body(), "model": "gpt-4o"}).json()["id"] != base


def test_chat_answers_last_user_message_text_parts_joined_and_truncated(
    client: httpx.Client,
) -> None:
    long_text = "word " * 30
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    {"type": "text", "text": long_text},
                ],
            },
        ],
    }
    content = client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    assert content.startswith("Mock reply to: Describe word word")
    assert content.endswith("...")
    assert len(content) <= len("Mock reply to: ") + 60 + len("...")


def test_max_tokens_truncates_reply_with_finish_reason_length(client: httpx.Client) -> None:
    for limit_field in ("max_tokens", "max_completion_tokens"):
        body = chat_body()
        body[limit_field] = 3
        reply = client.post(CHAT, json=body).json()
        assert reply["choices"][0]["message"]["content"] == "Mock reply to:"
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == 3

    roomy = client.post(CHAT, json=chat_body(max_tokens=100)).json()
    assert roomy["choices"][0]["finish_reason"] == "stop"


def test_missing_fields_and_bad_json_get_openai_400(client: httpx.Client) -> None:
    bad_json = client.post(
        CHAT, content=b'{"model": "gpt-4o-mini", ', headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    assert set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    assert bad_json.json()["error"]["type"] == "invalid_request_error"

    no_model = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
    assert no_model.status_code == 400
    assert no_model.json()["error"]["message"] == "you must provide a model parameter"

    no_messages = client.post(CHAT, json={"model": "gpt-4o-mini"})
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    assert no_messages.json()["error"]["code"] == "missing_required_parameter"


# -------------------------------------------------------------------------------------- streaming


def test_stream_sends_role_then_word_deltas_then_finish_then_done(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")

    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)  # no usage unless include_usage is asked for

    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    word_deltas = deltas[1:-1]
    assert len(word_deltas) == 6  # one per word of "Mock reply to: Hello mock provider"
    streamed = "".join(delta["content"] for delta in word_deltas)
    plain = client.post(CHAT, json=chat_body()).json()
    assert streamed == plain["choices"][0]["message"]["content"]
    assert chunks[0]["id"] == plain["id"]


def test_stream_include_usage_adds_a_usage_chunk_before_done(client: httpx.Client) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_events(client.post(CHAT, json=body).text)
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == client.post(CHAT, json=chat_body()).json()["usage"]
    assert all(json.loads(event)["usage"] is None for event in events[:-2])
    assert events[-1] == "[DONE]"


def test_stream_chunk_delay_slows_the_stream(client: httpx.Client) -> None:
    header = {"x-mock-fault": json.dumps({"stream_chunk_delay_ms": 40})}
    started = time.monotonic()
    events = sse_events(client.post(CHAT, json=chat_body(stream=True), headers=header).text)
    assert time.monotonic() - started >= 0.04 * (len(events) - 1)


# --------------------------------------------------------------------------------------- tool calls


def test_tool_call_when_tools_given_and_user_asks_about_weather(client: httpx.Client) -> None:
    body = chat_body("What's the weather in Paris?", tools=[WEATHER_TOOL])
    reply = client.post(CHAT, json=body).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_mock_")
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"location": "Paris"}'}

    without_weather = client.post(CHAT, json=chat_body("Hi", tools=[WEATHER_TOOL])).json()
    assert without_weather["choices"][0]["finish_reason"] == "stop"


def test_tool_result_turn_is_answered_with_text(client: httpx.Client) -> None:
    body = {
        "model": "gpt-4o-mini",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
        ],
    }
    choice = client.post(CHAT, json=body).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"].startswith("Mock reply to: ")


def test_streamed_tool_call_sends_call_then_argument_fragments(client: httpx.Client) -> None:
    body = chat_body("weather please", tools=[WEATHER_TOOL], stream=True)
    events = sse_events(client.post(CHAT, json=body).text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event)["choices"][0] for event in events[:-1]]
    first = chunks[0]["delta"]["tool_calls"][0]
    assert first["index"] == 0
    assert first["id"].startswith("call_mock_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(fragments) > 1
    assert "".join(fragments) == '{"location": "Paris"}'
    assert chunks[-1]["finish_reason"] == "tool_calls"


# ------------------------------------------------------------------------- embeddings and models


def test_embeddings_are_deterministic_unit_vectors(client: httpx.Client) -> None:
    single = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"})
    assert single.status_code == 200
    reply = single.json()
    assert reply["object"] == "list"
    assert reply["model"] == "text-embedding-3-small"
    (item,) = reply["data"]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    assert len(item["embedding"]) == 8  # default dimensions
    assert all(-1.0 <= x <= 1.0 for x in item["embedding"])
    assert math.isclose(math.fsum(x * x for x in item["embedding"]), 1.0, rel_tol=1e-9)
    assert reply["usage"] == {"prompt_tokens": 1, "total_tokens": 1}

    batch = client.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": ["hi", "hello there"], "dimensions": 16},
    ).json()
    assert [d["index"] for d in batch["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 16 for d in batch["data"])
    assert batch["data"][0]["embedding"] != batch["data"][1]["embedding"]
    assert batch["usage"]["prompt_tokens"] == 3
    again = client.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": ["hi", "hello there"], "dimensions": 16},
    ).json()
    assert again == batch


def test_embeddings_accept_token_arrays(client: httpx.Client) -> None:
    one = client.post("/v1/embeddings", json={"model": "m", "input": [1, 2, 3]}).json()
    assert len(one["data"]) == 1
    assert one["usage"]["prompt_tokens"] == 3
    two = client.post("/v1/embeddings", json={"model": "m", "input": [[1, 2], [3]]}).json()
    assert len(two["data"]) == 2


def test_models_lists_chat_and_embedding_models(client: httpx.Client) -> None:
    reply = client.get("/v1/models").json()
    assert reply["object"] == "list"
    ids = [model["id"] for model in reply["data"]]
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= set(ids)
    assert all(m["object"] == "model" and m["owned_by"] == "mock" for m in reply["data"])


def test_unknown_v1_path_is_an_openai_404(client: httpx.Client) -> None:
    response = client.post("/v1/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nope)"


# ------------------------------------------------------------------------------------ control API


def test_stats_count_calls_and_record_recent_requests(client: httpx.Client) -> None:
    client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer sk-secret"})
    client.post(CHAT, content=b"not json")  # failed calls count too
    client.get("/v1/models")

    result = stats(client)
    assert result["calls"] == 3
    assert result["by_path"] == {"/v1/chat/completions": 2, "/v1/models": 1}
    first, second, third = result["last_requests"]  # oldest first
    assert first["path"] == "/v1/chat/completions"
    assert first["method"] == "POST"
    assert first["body"] == chat_body()
    assert first["headers"]["authorization"] == "present"  # never the secret itself
    assert "sk-secret" not in json.dumps(result)
    assert second["body"] is None  # unparsable body
    assert third == {
        "path": "/v1/models",
        "method": "GET",
        "headers": third["headers"],
        "body": None,
        "peer": third["peer"],
    }


def test_stats_keep_only_the_last_50_requests(client: httpx.Client) -> None:
    for number in range(55):
        client.post(CHAT, json=chat_body(f"message {number}"))
    result = stats(client)
    assert result["calls"] == 55
    recorded = result["last_requests"]
    assert len(recorded) == 50
    assert recorded[0]["body"]["messages"][0]["content"] == "message 5"
    assert recorded[-1]["body"]["messages"][0]["content"] == "message 54"


def test_reset_clears_counters_requests_and_faults(client: httpx.Client) -> None:
    set_faults(client, next=[{"status": 500}], default={"status": 503})
    client.get("/v1/models")
    assert client.post("/_mock/reset").json() == {"ok": True}
    assert stats(client) == {
        "calls": 0,
        "by_path": {},
        "last_requests": [],
        "call_times": [],
        "streams": [],
    }
    assert client.get("/_mock/faults").json() == {"next": [], "default": None}
    assert client.get("/v1/models").status_code == 200


# ---------------------------------------------------------------------------------------- faults


def test_fault_queue_fails_twice_then_succeeds(client: httpx.Client) -> None:
    set_faults(client, next=[{"status": 500}, {"status": 500}])
    first = client.post(CHAT, json=chat_body())
    second = client.post(CHAT, json=chat_body())
    third = client.post(CHAT, json=chat_body())
    assert [first.status_code, second.status_code, third.status_code] == [500, 500, 200]
    assert first.json()["error"]["type"] == "server_error"
    assert stats(client)["calls"] == 3  # faulted calls are counted


def test_default_fault_applies_to_every_call_until_cleared(client: httpx.Client) -> None:
    set_faults(client, next=[{"status": 429}], default={"status": 503})
    codes = [client.get("/v1/models").status_code for _ in range(3)]
    assert codes == [429, 503, 503]  # the queue first, then the default
    body = client.get("/v1/models").json()
    assert body["error"]["type"] == "service_unavailable_error"
    assert body["error"]["code"] == "server_is_overloaded"
    set_faults(client, default=None)
    assert client.get("/v1/models").status_code == 200


def test_per_request_header_fault_wins_and_does_not_consume_the_queue(
    client: httpx.Client,
) -> None:
    set_faults(client, next=[{"status": 500}])
    header = {"x-mock-fault": json.dumps({"status": 400, "message": "nope", "code": "bad"})}
    overridden = client.post(CHAT, json=chat_body(), headers=header)
    assert overridden.status_code == 400
    assert overridden.json() == {
        "error": {"message": "nope", "type": "invalid_request_error", "param": None, "code": "bad"}
    }
    assert client.post(CHAT, json=chat_body()).status_code == 500  # queue still intact
    assert client.post(CHAT, json=chat_body()).status_code == 200


def test_fault_in_body_metadata_because_gateways_forward_bodies_not_headers(
    client: httpx.Client,
) -> None:
    body = chat_body(metadata={"mock_fault": json.dumps({"status": 429, "retry_after": 3})})
    response = client.post(CHAT, json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


def test_rate_limit_faults_carry_retry_after_headers_and_openai_bodies(
    client: httpx.Client,
) -> None:
    fault = {"status": 429, "retry_after": 2, "retry_after_ms": 1500}
    response = client.post(CHAT, json=chat_body(), headers={"x-mock-fault": json.dumps(fault)})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")

    quota = {"status": 429, "code": "insufficient_quota"}
    response = client.post(CHAT, json=chat_body(), headers={"x-mock-fault": json.dumps(quota)})
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("retry_after", ["Fri, 01 Jan 2099 00:00:00 GMT", "soon"])
def test_a_retry_after_may_be_a_string_an_http_date_or_garbage_sent_as_it_is(
    client: httpx.Client, retry_after: str
) -> None:
    fault = {"status": 429, "retry_after": retry_after}
    response = client.post(CHAT, json=chat_body(), headers={"x-mock-fault": json.dumps(fault)})
    assert response.status_code == 429
    assert response.headers["retry-after"] == retry_after


def test_invalid_faults_are_rejected_with_400(client: httpx.Client) -> None:
    response = client.post("/_mock/faults", json={"next": [{"stauts": 500}]})
    assert response.status_code == 400
    assert "stauts" in response.json()["error"]["message"]
    assert client.post("/_mock/faults", json={"default": {"status": 200}}).status_code == 400

    header = {"x-mock-fault": "{not json"}
    response = client.post(CHAT, json=chat_body(), headers=header)
    assert response.status_code == 400
    assert "x-mock-fault" in response.json()["error"]["message"]


def test_latency_fault_delays_the_answer(client: httpx.Client) -> None:
    header = {"x-mock-fault": json.dumps({"latency_ms": 300})}
    started = time.monotonic()
    response = client.post(CHAT, json=chat_body(), headers=header)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_hang_never_answers_so_the_client_times_out(client: httpx.Client) -> None:
    header = {"x-mock-fault": json.dumps({"hang": True})}
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json=chat_body(), headers=header, timeout=0.5)
    assert client.get("/v1/models").status_code == 200  # the server itself is fine
    assert stats(client)["calls"] == 2


def test_drop_closes_the_connection_without_a_response(client: httpx.Client) -> None:
    header = {"x-mock-fault": json.dumps({"drop": True})}
    with pytest.raises(httpx.TransportError):  # "server disconnected without a response"
        client.post(CHAT, json=chat_body(), headers=header)
    assert client.get("/v1/models").status_code == 200


def test_drop_after_chunks_breaks_the_stream_midway(client: httpx.Client) -> None:
    set_faults(client, next=[{"drop_after_chunks": 3}])
    received: list[str] = []

    def read_events(response: httpx.Response) -> None:
        received.extend(line for line in response.iter_lines() if line.startswith("data: "))

    with client.stream("POST", CHAT, json=chat_body(stream=True)) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.TransportError):  # "incomplete chunked read"
            read_events(response)
    assert len(received) == 3
    assert "[DONE]" not in received[-1]


def test_faults_leave_no_error_output(mock: MockServer, client: httpx.Client) -> None:
    """Hangs, drops and clients vanishing mid-stream are handled quietly by the server."""
    faults = [{"hang": True}, {"drop": True}, {"drop_after_chunks": 1}]
    for fault in faults:
        header = {"x-mock-fault": json.dumps(fault)}
        with pytest.raises(httpx.TransportError):
            client.post(CHAT, json=chat_body(stream=True), headers=header, timeout=0.3)
    slow = {"x-mock-fault": json.dumps({"stream_chunk_delay_ms": 50})}
    with client.stream("POST", CHAT, json=chat_body(stream=True), headers=slow) as response:
        next(response.iter_lines())  # read one event, then hang up mid-stream
    time.sleep(0.3)
    assert client.get("/v1/models").status_code == 200
    assert mock.stderr() == ""


# ------------------------------------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def keyed_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    with run_mock(tmp_path_factory.mktemp("keyed"), "--api-key", "sk-test-0123456789") as server:
        yield server


def test_api_key_is_required_when_configured(keyed_mock: MockServer) -> None:
    with httpx.Client(base_url=keyed_mock.url, timeout=5.0) as http:
        missing = http.post(CHAT, json=chat_body())
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"

        wrong = http.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer sk-wrong-4321"})
        assert wrong.status_code == 401
        assert wrong.json() == {
            "error": {
                "message": "Incorrect API key provided: sk-...4321.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }

        good = {"Authorization": "Bearer sk-test-0123456789"}
        assert http.post(CHAT, json=chat_body(), headers=good).status_code == 200
        # the control API needs no key; rejected calls are counted
        assert http.get("/_mock/stats").json()["calls"] == 3


def test_without_api_key_any_authorization_is_accepted(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer x"}).status_code == 200


# ------------------------------------------------------------------------- process and embedding


def test_latency_option_and_clean_exit_on_sigterm(tmp_path: Path) -> None:
    with run_mock(tmp_path, "--latency-ms", "200") as server:
        started = time.monotonic()
        assert httpx.get(server.url + "/v1/models", timeout=5.0).status_code == 200
        assert time.monotonic() - started >= 0.2
        assert _stop(server.process) == 0
        assert server.stderr() == ""


def test_workers_share_the_port(tmp_path: Path) -> None:
    with run_mock(tmp_path, "--workers", "2") as server:
        for _ in range(10):  # fresh connections are spread over the processes by the kernel
            assert httpx.get(server.url + "/v1/models", timeout=5.0).status_code == 200
        assert _stop(server.process) == 0
        assert server.stderr() == ""


def test_app_can_run_in_process() -> None:
    from aiohttp import web

    from aigateway.testing import MockOptions, create_mock_app

    async def scenario() -> None:
        runner = web.AppRunner(create_mock_app(MockOptions(api_key="sk-in-process-key")))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                headers = {"Authorization": "Bearer sk-in-process-key"}
                reply = await http.post(CHAT, json=chat_body(), headers=headers)
                assert reply.json()["choices"][0]["message"]["content"].startswith("Mock reply")
                assert (await http.post(CHAT, json=chat_body())).status_code == 401
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_cli_options_are_documented() -> None:
    import argparse

    from aigateway.testing import add_mock_arguments

    parser = argparse.ArgumentParser()
    add_mock_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port, defaults.workers) == ("127.0.0.1", 8090, 1)
    assert (defaults.latency_ms, defaults.stream_chunk_delay_ms, defaults.api_key) == (0, 0, None)
    options = [action for action in parser._actions if action.dest != "help"]
    assert all(action.help for action in options)


def test_official_openai_client_understands_the_mock(
    client: httpx.Client, mock: MockServer
) -> None:
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=mock.url + "/v1", api_key="sk-anything", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello mock provider"}]
        )
        assert completion.choices[0].message.content == "Mock reply to: Hello mock provider"
        assert completion.usage is not None
        assert completion.usage.total_tokens == 12

        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Hello mock provider"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Mock reply to: Hello mock provider"
        assert chunks[-1].usage is not None

        # the SDK asks for base64 embeddings by default and decodes them
        embedding = sdk.embeddings.create(model="text-embedding-3-small", input="hi")
        expected = client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}
        ).json()["data"][0]["embedding"]
        assert embedding.data[0].embedding == pytest.approx(expected, rel=1e-6)

        set_faults(client, next=[{"status": 429}])
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "again"}]
            )


# ------------------------------------------------------------------------ Anthropic (/anthropic)

MESSAGES = "/anthropic/v1/messages"


def messages_body(text: str = "Hello mock provider", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def anthropic_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event of an Anthropic stream; the name must match data.type."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw.split("\n\n")[:-1]:
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        events.append((data["type"], data))
    return events


def test_anthropic_message_is_deterministic_and_says_what_openai_says(
    client: httpx.Client,
) -> None:
    body = messages_body(system="You are terse.")
    first = client.post(MESSAGES, json=body)
    assert first.status_code == 200
    assert first.json() == client.post(MESSAGES, json=body).json()
    reply = first.json()
    assert reply["id"].startswith("msg_mock_")
    assert (reply["type"], reply["role"], reply["model"]) == (
        "message",
        "assistant",
        "claude-sonnet-4-5-20250929",
    )
    assert reply["content"] == [{"type": "text", "text": "Mock reply to: Hello mock provider"}]
    assert (reply["stop_reason"], reply["stop_sequence"]) == ("end_turn", None)
    openai = client.post(
        CHAT,
        json={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello mock provider"},
            ],
        },
    ).json()["usage"]
    assert reply["usage"] == {
        "input_tokens": openai["prompt_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": openai["completion_tokens"],
    }
    short = client.post(MESSAGES, json=messages_body(max_tokens=3)).json()
    assert short["stop_reason"] == "max_tokens"
    assert short["content"][0]["text"] == "Mock reply to:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"n": 2}, "n: Extra inputs are not permitted"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "  "}]}, "non-whitespace text"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
                ]
            },
            "unexpected `tool_use_id`",
        ),
    ],
)
def test_anthropic_rejects_what_anthropic_rejects(
    client: httpx.Client, change: dict[str, Any], message: str
) -> None:
    body = {**messages_body(), **change}
    body = {key: value for key, value in body.items() if value is not None}
    response = client.post(MESSAGES, json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert message in error["error"]["message"]
    assert error["request_id"].startswith("req_")


def test_anthropic_stream_has_named_events_a_ping_and_ends_with_message_stop(
    client: httpx.Client,
) -> None:
    response = client.post(MESSAGES, json=messages_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = anthropic_events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert (start["content"], start["stop_reason"]) == ([], None)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "Mock reply to: Hello mock provider"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"] == {"output_tokens": 6}


def test_anthropic_tool_use_plain_and_streamed(client: httpx.Client) -> None:
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    body = messages_body("What's the weather in Paris?", tools=[tool])
    reply = client.post(MESSAGES, json=body).json()
    assert reply["stop_reason"] == "tool_use"
    (block,) = reply["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_mock_")
    assert (block["name"], block["input"]) == ("get_weather", {"location": "Paris"})

    events = anthropic_events(client.post(MESSAGES, json={**body, "stream": True}).text)
    start = events[1][1]["content_block"]
    assert (start["type"], start["id"], start["input"]) == ("tool_use", block["id"], {})
    fragments = [
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
    ]
    assert fragments[0] == ""
    assert json.loads("".join(fragments)) == {"location": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    forced = messages_body("Hi", tools=[tool], tool_choice={"type": "tool", "name": "get_weather"})
    assert client.post(MESSAGES, json=forced).json()["stop_reason"] == "tool_use"
    none = messages_body("weather?", tools=[tool], tool_choice={"type": "none"})
    assert client.post(MESSAGES, json=none).json()["stop_reason"] == "end_turn"


def test_anthropic_models_and_unknown_paths(client: httpx.Client) -> None:
    listing = client.get("/anthropic/v1/models").json()
    assert listing["has_more"] is False
    assert all(m["type"] == "model" and m["created_at"].endswith("Z") for m in listing["data"])
    model_id = listing["data"][0]["id"]
    assert client.get(f"/anthropic/v1/models/{model_id}").json()["id"] == model_id
    missing = client.get("/anthropic/v1/models/claude-nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert client.post("/anthropic/v1/complete", json={}).status_code == 404


def test_anthropic_faults_come_as_anthropic_errors(client: httpx.Client) -> None:
    set_faults(
        client,
        next=[
            {"status": 529},
            {"status": 429, "retry_after": 17},
            {"status": 429, "code": "insufficient_quota"},
            {"stream_error_after_chunks": 2},
        ],
    )
    overloaded = client.post(MESSAGES, json=messages_body())
    assert overloaded.status_code == 529
    assert overloaded.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    limited = client.post(MESSAGES, json=messages_body())
    assert limited.headers["retry-after"] == "17"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    capped = client.post(MESSAGES, json=messages_body())
    assert capped.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert "retry-after" not in capped.headers
    broken = client.post(MESSAGES, json=messages_body(stream=True))
    assert broken.status_code == 200
    events = anthropic_events(broken.text)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


# ------------------------------------------------------------------------------ Gemini (/gemini)

GEMINI = "/gemini/v1beta/models/gemini-2.0-flash"


def gemini_body(text: str = "Hello mock provider", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def test_gemini_generate_content_says_what_openai_says(client: httpx.Client) -> None:
    body = gemini_body(systemInstruction={"parts": [{"text": "You are terse."}]})
    response = client.post(GEMINI + ":generateContent", json=body)
    assert response.status_code == 200
    reply = response.json()
    assert reply == client.post(GEMINI + ":generateContent", json=body).json()
    assert reply["candidates"] == [
        {
            "content": {"parts": [{"text": "Mock reply to: Hello mock provider"}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ]
    assert reply["usageMetadata"] == {
        "promptTokenCount": 12,  # as OpenAI counts the same conversation
        "candidatesTokenCount": 6,
        "totalTokenCount": 18,
    }
    assert reply["modelVersion"] == "gemini-2.0-flash"
    assert reply["responseId"].startswith("mock-")

    two = gemini_body(generationConfig={"candidateCount": 2, "maxOutputTokens": 3})
    candidates = client.post(GEMINI + ":generateContent", json=two).json()["candidates"]
    assert [(c["index"], c["finishReason"]) for c in candidates] == [
        (0, "MAX_TOKENS"),
        (1, "MAX_TOKENS"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            gemini_body(generationConfig={"max_tokens": 5}),
            "Unknown name \"max_tokens\" at 'generation_config'",
        ),
        ({**gemini_body(), "messages": []}, 'Unknown name "messages"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (gemini_body(generationConfig={"stopSequences": list("abcdef")}), "stop_sequences"),
    ],
)
def test_gemini_rejects_what_gemini_rejects(
    client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    response = client.post(GEMINI + ":generateContent", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


def test_gemini_stream_is_crlf_framed_without_terminator(client: httpx.Client) -> None:
    response = client.post(GEMINI + ":streamGenerateContent?alt=sse", json=gemini_body())
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert raw.endswith(b"\r\n\r\n")
    events = [json.loads(e[len(b"data: ") :]) for e in raw.split(b"\r\n\r\n")[:-1]]
    text = "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events)
    assert text == "Mock reply to: Hello mock provider"
    assert all("finishReason" not in e["candidates"][0] for e in events[:-1])
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["totalTokenCount"] == 12

    array = client.post(GEMINI + ":streamGenerateContent", json=gemini_body()).json()
    assert array == events  # without alt=sse: one JSON array


def test_gemini_function_call_has_no_id_and_a_thought_signature(client: httpx.Client) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {}}]}]
    body = gemini_body("What's the weather in Paris?", tools=tools)
    (candidate,) = client.post(GEMINI + ":generateContent", json=body).json()["candidates"]
    assert candidate["finishReason"] == "STOP"  # Gemini has no tool-call finish reason
    (part,) = candidate["content"]["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": {"location": "Paris"}}
    assert part["thoughtSignature"]

    history = {
        "contents": [
            body["contents"][0],
            {"role": "model", "parts": [part]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 21}}}],
            },
        ],
        "tools": tools,
    }
    gemini3 = "/gemini/v1beta/models/gemini-3-pro-preview:generateContent"
    answered = client.post(gemini3, json=history).json()["candidates"][0]
    assert answered["content"]["parts"][0]["text"].startswith("Mock reply to: ")
    del history["contents"][1]["parts"][0]["thoughtSignature"]
    unsigned = client.post(gemini3, json=history)
    assert unsigned.status_code == 400
    assert "thought_signature" in unsigned.json()["error"]["message"]


def test_gemini_embeddings_match_the_openai_vectors(client: httpx.Client) -> None:
    url = "/gemini/v1beta/models/text-embedding-004"
    one = client.post(url + ":embedContent", json={"content": {"parts": [{"text": "hi"}]}}).json()
    openai = client.post("/v1/embeddings", json={"model": "m", "input": "hi"}).json()
    assert one == {"embedding": {"values": openai["data"][0]["embedding"]}}

    request = {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}}
    batch = client.post(
        url + ":batchEmbedContents",
        json={"requests": [request, {**request, "outputDimensionality": 4}]},
    ).json()
    assert [len(e["values"]) for e in batch["embeddings"]] == [8, 4]
    wrong_model = {"requests": [{**request, "model": "models/other"}]}
    assert client.post(url + ":batchEmbedContents", json=wrong_model).status_code == 400
    too_many = {"requests": [request] * 101}
    assert client.post(url + ":batchEmbedContents", json=too_many).status_code == 400


def test_gemini_models_and_unknown_paths(client: httpx.Client) -> None:
    models = client.get("/gemini/v1beta/models").json()["models"]
    assert {"models/gemini-2.0-flash", "models/text-embedding-004"} <= {m["name"] for m in models}
    assert client.get(GEMINI).json()["name"] == "models/gemini-2.0-flash"
    missing = client.get("/gemini/v1beta/models/gemini-nope")
    assert (missing.status_code, missing.json()["error"]["status"]) == (404, "NOT_FOUND")
    assert client.post(GEMINI + ":countSheep", json={}).status_code == 404
    assert client.get("/gemini/v1beta/files").json()["error"]["code"] == 404


def test_gemini_faults_come_as_gemini_errors(client: httpx.Client) -> None:
    set_faults(
        client,
        next=[
            {"status": 429, "retry_after": 2},
            {"status": 429, "code": "insufficient_quota"},
            {"status": 400, "code": "API_KEY_INVALID"},
            {"status": 503},
            {"stream_error_after_chunks": 1},
        ],
    )
    limited = client.post(GEMINI + ":generateContent", json=gemini_body())
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers  # Gemini puts the delay in the body
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    kinds = {d["@type"].rsplit(".", 1)[1]: d for d in error["details"]}
    assert kinds["RetryInfo"]["retryDelay"] == "2s"
    assert "PerMinute" in kinds["QuotaFailure"]["violations"][0]["quotaId"]

    daily = client.post(GEMINI + ":generateContent", json=gemini_body()).json()["error"]
    assert "PerDay" in daily["details"][0]["violations"][0]["quotaId"]
    bad_key = client.post(GEMINI + ":generateContent", json=gemini_body()).json()["error"]
    assert bad_key["details"][0]["reason"] == "API_KEY_INVALID"
    unavailable = client.post(GEMINI + ":generateContent", json=gemini_body())
    assert unavailable.json()["error"]["status"] == "UNAVAILABLE"

    broken = client.post(GEMINI + ":streamGenerateContent?alt=sse", json=gemini_body())
    assert broken.status_code == 200
    good, error_line, end = broken.content.split(b"\r\n\r\n")
    assert good.startswith(b"data: ")
    assert json.loads(error_line)["error"]["status"] == "INTERNAL"  # bare JSON, no "data:"
    assert end == b""


def test_openai_stream_error_fault(client: httpx.Client) -> None:
    header = {"x-mock-fault": json.dumps({"stream_error_after_chunks": 2})}
    events = sse_events(client.post(CHAT, json=chat_body(stream=True), headers=header).text)
    assert len(events) == 3
    assert json.loads(events[-1])["error"]["type"] == "server_error"  # and no [DONE]


def test_stats_count_every_format_and_mask_their_keys(client: httpx.Client) -> None:
    client.post(MESSAGES, json=messages_body(), headers={"x-api-key": "sk-ant-secret"})
    client.post(
        GEMINI + ":generateContent", json=gemini_body(), headers={"x-goog-api-key": "AIza-secret"}
    )
    result = stats(client)
    assert result["by_path"] == {MESSAGES: 1, GEMINI + ":generateContent": 1}
    assert result["last_requests"][0]["headers"]["x-api-key"] == "present"
    assert result["last_requests"][1]["headers"]["x-goog-api-key"] == "present"
    assert "secret" not in json.dumps(result)


def test_each_format_checks_the_key_its_own_way(keyed_mock: MockServer) -> None:
    with httpx.Client(base_url=keyed_mock.url, timeout=5.0) as http:
        key = "sk-test-0123456789"
        wrong = http.post(MESSAGES, json=messages_body(), headers={"x-api-key": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == {
            "type": "authentication_error",
            "message": "invalid x-api-key",
        }
        assert (
            http.post(MESSAGES, json=messages_body(), headers={"x-api-key": key}).status_code == 200
        )

        url = GEMINI + ":generateContent"
        missing = http.post(url, json=gemini_body())
        assert (missing.status_code, missing.json()["error"]["status"]) == (
            403,
            "PERMISSION_DENIED",
        )
        bad = http.post(url, json=gemini_body(), headers={"x-goog-api-key": "nope"})
        assert bad.status_code == 400
        assert bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        assert (
            http.post(url, json=gemini_body(), headers={"x-goog-api-key": key}).status_code == 200
        )
        assert http.post(url + f"?key={key}", json=gemini_body()).status_code == 200
