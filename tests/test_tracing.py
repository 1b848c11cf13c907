"""OpenTelemetry traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, every API request is one trace.

A real gateway exports to a real OTLP/HTTP receiver started here (``tests/otlp.py``, the
payloads decoded with the official ``opentelemetry-proto`` classes).  Each request sends
its own W3C ``traceparent``, so each test finds its spans by its own trace id: the
gateway continues the client's trace.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from aigateway.config import ConfigError, load_settings
from otlp import Receiver, Span
from servers import Gateway, MockProvider, chat_body, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(
    mock_provider: MockProvider, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = tmp_path_factory.mktemp("config") / "gateway.toml"
    config.write_text(
        '[aliases]\nresilient = ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"]\n'
    )
    gateway = Gateway(
        mock_provider,
        AI_GATEWAY_CONFIG=str(config),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_PROPAGATE_TO_PROVIDERS="true",
        CACHE_ENABLED="true",
        MAX_RETRIES="1",
    )
    yield gateway
    gateway.stop()


def traceparent() -> tuple[str, str, str]:
    """A client's trace id, span id and ``traceparent`` header (sampled)."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def spans_until(
    receiver: Receiver, trace_id: str, done: Callable[[list[Span]], bool]
) -> list[Span]:
    wait_for(lambda: done(receiver.trace(trace_id)))
    return receiver.trace(trace_id)


def server_span(spans: list[Span]) -> Span:
    (server,) = [s for s in spans if s.kind == "SERVER"]
    return server


def with_server(spans: list[Span]) -> bool:
    return any(s.kind == "SERVER" for s in spans)


def post(gateway: Gateway, header: str, body: dict[str, object]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/v1/chat/completions", json=body, headers={"traceparent": header})


def test_a_request_is_one_trace_that_continues_the_clients(
    traced: Gateway, receiver: Receiver, mock: MockProvider
) -> None:
    trace_id, client_span, header = traceparent()
    response = post(traced, header, chat_body("one trace"))
    assert response.status_code == 200

    spans = spans_until(receiver, trace_id, lambda s: with_server(s) and len(s) >= 4)
    server = server_span(spans)
    assert server.parent_id == client_span  # the client's trace, continued
    assert server.name == "chat gpt-4o-mini"
    assert server.service == "aigateway"
    attributes = server.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.response.model"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.route"] == "/v1/chat/completions"
    assert attributes["aigateway.cache.result"] == "miss"
    assert attributes["aigateway.priority"] == "normal"
    assert "aigateway.key.name" not in attributes  # no tenant key: no name

    children = {s.name: s for s in spans if s is not server}
    assert {s.parent_id for s in children.values()} == {server.span_id}
    assert children["cache lookup"].attributes["aigateway.cache.result"] == "miss"
    assert children["queue wait"].attributes["gen_ai.provider.name"] == "openai"
    attempt = children["chat gpt-4o-mini"]
    assert attempt.kind == "CLIENT"
    assert attempt.attributes["aigateway.outcome"] == "ok"
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert server.start_ns <= attempt.start_ns <= attempt.end_ns <= server.end_ns

    # The provider got the gateway's span as its parent (OTEL_PROPAGATE_TO_PROVIDERS).
    (sent,) = [r for r in mock.stats()["last_requests"] if "one trace" in str(r["body"])]
    assert sent["headers"]["traceparent"] == f"00-{trace_id}-{server.span_id}-01"
    # The request's log line names its trace.
    assert wait_for(lambda: f"trace_id={trace_id}" in traced.log())


def test_a_retry_and_a_failover_are_attempt_spans_with_their_outcomes(
    traced: Gateway, receiver: Receiver, mock: MockProvider
) -> None:
    mock.faults({"status": 503}, {"status": 503})  # openai: the first try and its retry
    trace_id, _, header = traceparent()
    response = post(traced, header, {**chat_body("fail over"), "model": "resilient"})
    assert response.status_code == 200

    spans = spans_until(receiver, trace_id, lambda s: with_server(s) and len(s) >= 7)
    server = server_span(spans)
    attempts = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    assert [
        (s.attributes["gen_ai.provider.name"], s.attributes["aigateway.attempt"], s.status)
        for s in attempts
    ] == [("openai", 1, "ERROR"), ("openai", 2, "ERROR"), ("anthropic", 1, "UNSET")]
    assert attempts[0].attributes["aigateway.outcome"] == "server_error"
    assert attempts[0].attributes["error.type"] == "server_error"
    assert server.events == ["retry", "failover"]
    assert server.attributes["gen_ai.provider.name"] == "anthropic"
    assert server.attributes["aigateway.retries"] == 1
    assert server.attributes["aigateway.failovers"] == 1
    assert server.name == "chat resilient"
    assert server.status == "UNSET"


def test_a_failed_request_sets_the_error_status(
    traced: Gateway, receiver: Receiver, mock: MockProvider
) -> None:
    mock.faults({"status": 503}, {"status": 503})
    trace_id, _, header = traceparent()
    response = post(traced, header, chat_body("no luck"))
    assert response.status_code == 503

    server = server_span(spans_until(receiver, trace_id, with_server))
    assert server.status == "ERROR"
    assert server.attributes["http.response.status_code"] == 503
    assert server.attributes["error.type"] == "503"


def test_a_stream_has_a_span_until_its_end_and_feeds_the_stream_metrics(
    traced: Gateway, receiver: Receiver, mock: MockProvider
) -> None:
    trace_id, _, header = traceparent()
    body = chat_body("stream it", stream=True)
    with (
        traced.client() as client,
        client.stream(
            "POST", "/v1/chat/completions", json=body, headers={"traceparent": header}
        ) as response,
    ):
        text = "".join(response.iter_text())
    assert text.endswith("data: [DONE]\n\n")

    spans = spans_until(receiver, trace_id, lambda s: {"stream"} <= {x.name for x in s})
    spans = spans_until(receiver, trace_id, with_server)
    server = server_span(spans)
    (stream,) = [s for s in spans if s.name == "stream"]
    assert stream.parent_id == server.span_id
    assert stream.attributes["aigateway.stream.outcome"] == "complete"
    assert stream.attributes["gen_ai.usage.output_tokens"] > 0
    assert stream.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert stream.events == ["first token"]
    assert server.attributes["aigateway.stream"] is True
    assert server.attributes["gen_ai.usage.output_tokens"] > 0

    with traced.client() as client:
        metrics = client.get("/metrics").text
    for name in ("stream_first_token_seconds", "stream_tokens_per_second"):
        match = re.search(rf'^aigateway_{name}_count{{provider="openai"}} (\S+)$', metrics, re.M)
        assert match is not None and float(match.group(1)) >= 1, name


def test_a_cache_hit_is_answered_without_a_provider_span(
    traced: Gateway, receiver: Receiver
) -> None:
    post(traced, traceparent()[2], chat_body("cache me"))
    trace_id, _, header = traceparent()
    response = post(traced, header, chat_body("cache me"))
    assert response.headers["x-aigateway-cache"] == "hit"

    spans = spans_until(receiver, trace_id, lambda s: with_server(s) and len(s) >= 2)
    assert sorted(s.name for s in spans) == ["cache lookup", "chat gpt-4o-mini"]
    (lookup,) = [s for s in spans if s.name == "cache lookup"]
    assert lookup.attributes["aigateway.cache.result"] == "hit"
    assert server_span(spans).attributes["aigateway.cache.result"] == "hit"


def test_sampling_is_the_sdks_and_propagation_is_off_by_default(
    mock_provider: MockProvider,
) -> None:
    """Ratio 0 for the gateway's own traces; a client's sampled parent still decides for its
    request (parentbased_traceidratio).  One worker: its exports arrive in order."""
    receiver = Receiver()
    gateway = Gateway(
        mock_provider,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
        OTEL_SERVICE_NAME="edge",
        MAX_WORKERS="1",
    )
    try:
        with gateway.client() as client:
            for i in range(5):
                assert client.post("/v1/chat/completions", json=chat_body(f"unsampled {i}"))
        trace_id, _, header = traceparent()
        assert post(gateway, header, chat_body("sampled by its parent")).status_code == 200
        spans = spans_until(receiver, trace_id, with_server)
        assert server_span(spans).service == "edge"
        assert {s.trace_id for s in receiver.spans} == {trace_id}  # nothing else was sampled
        # Unsampled requests still log their trace id; nothing went to the provider.
        assert len(re.findall(r"trace_id=[0-9a-f]{32}", gateway.log())) >= 6
        sent = [r for r in mock_provider.stats()["last_requests"] if "sampled" in str(r["body"])]
        assert sent and not any("traceparent" in r["headers"] for r in sent)
    finally:
        gateway.stop()
        receiver.stop()


def test_with_tracing_off_the_tracing_sdk_is_never_imported() -> None:
    """Neither the gateway's tracing nor the SDK's tracer and exporter.  (redis-py imports
    the OpenTelemetry API and metrics SDK by itself whenever they are installed.)"""
    script = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from aigateway.app import create_app\n"
        "from aigateway.config import load_settings\n"
        "app = create_app(load_settings({'CACHE_ENABLED': 'false'}))\n"
        "with TestClient(app) as client:\n"
        "    client.post('/v1/chat/completions', json={'model': 'x', 'messages': []})\n"
        "names = ('aigateway.tracing.otel', 'opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "print(sorted(m for m in sys.modules if m.startswith(names)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_variables_without_the_extra_exit_2_naming_it(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from aigateway.cli import main\n"
        "sys.exit(main(['serve']))\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "aigateway: OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
        "pip install 'aigateway[otel]'"
    ]


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, ""),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, ""),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, ""),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(
    env: dict[str, str], exporter: str
) -> None:
    assert load_settings(env).tracing == exporter


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        ({"OTEL_PROPAGATE_TO_PROVIDERS": "maybe"}, "OTEL_PROPAGATE_TO_PROVIDERS"),
    ],
)
def test_an_exporter_the_gateway_does_not_ship_is_a_configuration_error(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_a_tenant_keys_name_is_on_its_requests_span(
    mock_provider: MockProvider, receiver: Receiver
) -> None:
    """Its own gateway: once a tenant key exists, every /v1 request needs a key."""
    gateway = Gateway(
        mock_provider, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="50"
    )
    try:
        with gateway.client() as client:
            made = client.post("/admin/keys", json={"name": "team-search"})
            assert made.status_code == 201
            trace_id, _, header = traceparent()
            answer = client.post(
                "/v1/chat/completions",
                json=chat_body("whose request"),
                headers={"traceparent": header, "authorization": f"Bearer {made.json()['key']}"},
            )
            assert answer.status_code == 200
        server = server_span(spans_until(receiver, trace_id, with_server))
        assert server.attributes["aigateway.key.name"] == "team-search"
    finally:
        gateway.stop()
