"""Health probes: one cheap call (the model list) whose outcome feeds a provider's health.

Every worker runs :func:`probe_loop`; the health board (``core.health``) decides whose
turn it is, so the node probes each provider once per interval, or once after a
cool-down to close an open circuit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from aigateway.core.health import HealthBoard
from aigateway.core.providers import Provider
from aigateway.providers.base import ModelListAdapter
from aigateway.upstream import UpstreamFailure, UpstreamResponse, UpstreamTimeout

logger = logging.getLogger("aigateway.health")

__all__ = ("probe", "probe_loop")


async def probe_loop(
    board: HealthBoard,
    providers: Mapping[str, Provider],
    on_probe: Callable[[str, str], None] | None = None,
    tick_s: float = 0.25,
) -> None:
    """Probe the providers when this worker's turn comes (run in every worker)."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(provider: Provider) -> None:
        try:
            outcome = await probe(board, provider)
        except Exception:
            logger.exception("the health probe of %s failed", provider.name)
            return
        if on_probe is not None:
            on_probe(provider.name, outcome)

    try:
        while True:
            await asyncio.sleep(tick_s)
            for name in board.providers:
                provider = providers.get(name)
                if provider is None or not provider.usable:
                    continue
                if not isinstance(provider.adapter, ModelListAdapter):
                    continue
                if board.take_probe(name):
                    task = asyncio.ensure_future(run(provider))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()


async def probe(board: HealthBoard, provider: Provider) -> str:
    """One cheap call (the model list); its outcome feeds the provider's health."""
    adapter = provider.adapter
    assert isinstance(adapter, ModelListAdapter)
    call = adapter.models_call()
    started = time.monotonic()
    timeout = board.policy.probe_timeout_s
    try:
        response = await provider.client.send(
            call.method, call.url, headers=call.headers, body=call.body, timeout_s=timeout
        )
        try:
            body = await response.read(max(timeout - (time.monotonic() - started), 0.001))
        finally:
            await response.close()
        outcome = "ok" if 200 <= response.status < 300 else _outcome_of(provider, response, body)
    except UpstreamTimeout:
        outcome = "timeout"
    except UpstreamFailure:
        outcome = "unreachable"
    seconds = time.monotonic() - started
    board.record(provider.name, outcome, seconds, probe=True)
    logger.debug("probe of %s: %s in %.3f s", provider.name, outcome, seconds)
    return outcome


def _outcome_of(provider: Provider, response: UpstreamResponse, body: bytes) -> str:
    """A probe's error answer, classified by the provider's adapter like any call's; one
    that says nothing about its health (a rate limit, say) shows it alive: it answered."""
    failure = provider.adapter.classify_error(response.status, response.headers, body)
    return failure.error.fault.outcome if failure.error.fault.health is not None else "ok"
