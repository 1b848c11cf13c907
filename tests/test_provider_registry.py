"""The provider registry: one owner of a worker's providers and their pooled clients.

When ``<PREFIX>_MAX_CONNS`` changes live, the registry gives the provider a new pool:
every new call goes through it, while the calls already in flight on the old pool (a
whole answer being read, a stream being relayed) finish there undisturbed; the old pool
is closed once the last of them ends, not on a timer.

In process, on a virtual clock: a ``Pipeline`` over the registry, providers faked behind
``upstream.UpstreamClient`` (tests/fake_upstream.py).  Real processes show the same
change reaching every worker in test_ops_config.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from aigateway.config import ProviderSettings, Settings
from aigateway.core.accounting import Accounting
from aigateway.core.media import RemoteMedia
from aigateway.core.observer import RequestObserver, RequestRecord
from aigateway.core.pipeline import Pipeline
from aigateway.core.providers import Provider
from aigateway.core.registry import ProviderRegistry
from aigateway.core.retry import RetryPolicy
from aigateway.core.router import Router
from aigateway.errors import ProviderUnreachable
from aigateway.providers.openai import OpenAIAdapter
from aigateway.upstream import UpstreamClient
from aigateway.wire import ApiRequest, Completed, Streaming
from fake_upstream import FakeUpstream, Reply
from virtual_clock import run

PROVIDERS = ("openai", "google")


def registry(**upstreams: FakeUpstream) -> ProviderRegistry:
    made: dict[str, list[FakeUpstream]] = {}

    def new_pool(p: ProviderSettings, settings: Settings) -> UpstreamClient:
        """A fresh fake pool, remembered under its provider with its size."""
        pool = FakeUpstream(upstreams[p.name].reply)
        made.setdefault(p.name, []).append(pool)
        return pool

    providers = {
        name: Provider(
            name,
            OpenAIAdapter(name, f"http://{name}.test/v1", "sk-test", "KEY"),
            upstream,
            usable=True,
            key_variable="KEY",
        )
        for name, upstream in upstreams.items()
    }
    result = ProviderRegistry(providers, client_factory=new_pool)
    result.made = made  # type: ignore[attr-defined]
    return result


def pipeline(providers: ProviderRegistry) -> Pipeline:
    return Pipeline(
        providers,
        Router(tuple(providers)),
        RetryPolicy(0, 1.0, 30.0),
        60.0,
        RemoteMedia(FakeUpstream(), 1 << 20, 5.0, allow_private=False),
    )


def observer() -> RequestObserver:
    return RequestObserver(Accounting.private(PROVIDERS), RequestRecord("req"))


def chat(text: str, stream: bool = False) -> ApiRequest:
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return ApiRequest("chat", "openai/gpt-4o-mini", body, orjson.dumps(body), stream=stream)


def content(result: Completed | Streaming) -> str:
    assert isinstance(result, Completed)
    return str(orjson.loads(result.body)["choices"][0]["message"]["content"])


def test_a_new_client_takes_new_calls_and_the_old_one_closes_when_its_last_call_ends() -> None:
    old = FakeUpstream(Reply(text="from the old pool", latency_s=5.0))
    providers = registry(openai=old)
    gateway = pipeline(providers)

    async def scenario() -> None:
        slow = asyncio.ensure_future(gateway.chat(chat("slow"), observer()))
        await asyncio.sleep(1.0)  # its call is in flight on the old pool
        new = FakeUpstream(Reply(text="from the new pool", latency_s=0.1))
        providers.replace_client("openai", new)
        assert content(await gateway.chat(chat("quick"), observer())) == "from the new pool"
        assert not old.closed and providers.retired == 1  # a call still needs it
        assert content(await slow) == "from the old pool"  # finished undisturbed
        await asyncio.sleep(0)  # the close runs in a task of its own
        assert old.closed and not new.closed and providers.retired == 0
        assert (len(old.calls), len(new.calls)) == (1, 1)

    run(scenario())


def test_a_stream_being_relayed_keeps_the_old_pool_open_until_it_ends() -> None:
    old = FakeUpstream(Reply(text="one two three four", gap_s=1.0))
    providers = registry(openai=old)
    gateway = pipeline(providers)

    async def scenario() -> list[str]:
        result = await gateway.chat(chat("stream", stream=True), observer())
        assert isinstance(result, Streaming)
        events = [await anext(result.events)]  # the first word has arrived
        providers.replace_client("openai", FakeUpstream())
        await asyncio.sleep(1.5)
        assert not old.closed
        events += [event async for event in result.events]  # the rest, a second apart
        await asyncio.sleep(0)
        assert old.closed
        return [e.decode() for e in events]

    events = run(scenario())
    data = [orjson.loads(e[len("data: ") :]) for e in "".join(events).split("\n\n")
            if e.startswith("data: {")]  # fmt: skip
    words = [c["delta"].get("content") for d in data for c in d["choices"]]
    assert [w for w in words if w] == ["one", "two", "three", "four"]


def test_a_client_without_calls_in_flight_is_closed_at_once() -> None:
    old = FakeUpstream()
    providers = registry(openai=old)

    async def scenario() -> None:
        providers.replace_client("openai", FakeUpstream())
        await asyncio.sleep(0)

    run(scenario())
    assert old.closed and providers.retired == 0


def test_a_call_that_fails_or_is_cancelled_ends_too() -> None:
    old = FakeUpstream(Reply(unreachable=True, latency_s=1.0))
    providers = registry(openai=old)
    gateway = pipeline(providers)

    async def scenario() -> None:
        failing = asyncio.ensure_future(gateway.chat(chat("fails"), observer()))
        await asyncio.sleep(0)  # its call has started
        old.reply = Reply(latency_s=10.0)
        await asyncio.sleep(0.5)
        hanging = asyncio.ensure_future(gateway.chat(chat("hangs"), observer()))
        await asyncio.sleep(0.1)
        providers.replace_client("openai", FakeUpstream())
        with pytest.raises(ProviderUnreachable):
            await failing
        assert not old.closed  # the hanging call is still in flight
        hanging.cancel()  # its client left
        with pytest.raises(asyncio.CancelledError):
            await hanging
        await asyncio.sleep(0)
        assert old.closed

    run(scenario())


def test_a_new_connection_limit_gives_only_that_provider_a_new_pool() -> None:
    openai, google = FakeUpstream(), FakeUpstream()
    providers = registry(openai=openai, google=google)
    settings = Settings()
    changed = settings.with_providers({"google": {"max_connections": 3}})

    async def scenario() -> None:
        providers.apply_settings(settings, changed)
        providers.apply_settings(changed, changed)  # nothing changed: nothing replaced
        await asyncio.sleep(0)

    run(scenario())
    made = providers.made  # type: ignore[attr-defined]
    assert list(made) == ["google"] and len(made["google"]) == 1
    assert google.closed and not openai.closed


def test_closing_the_registry_closes_every_pool_current_and_retired() -> None:
    old = FakeUpstream(Reply(latency_s=5.0))
    providers = registry(openai=old, google=FakeUpstream())
    gateway = pipeline(providers)
    new = FakeUpstream()

    async def scenario() -> None:
        call = asyncio.ensure_future(gateway.chat(chat("in flight"), observer()))
        await asyncio.sleep(1.0)
        providers.replace_client("openai", new)
        await providers.close()  # the worker stops
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)

    run(scenario())
    assert old.closed and new.closed
