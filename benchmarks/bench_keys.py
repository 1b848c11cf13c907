"""What a tenant key adds to one request, in-process: finding it, admitting the request,
reserving and settling one provider call (a key with every limit on), in a shared-memory
segment like a worker's (so the region's ``flock`` is a real one: the pure twin changes the
budget under it, the compiled twin by compare-and-swap).

Run: ``pytest benchmarks/bench_keys.py --benchmark-only``.  The buckets are the selected
twin of ``aigateway.hotpath`` (``AIGATEWAY_NO_EXTENSIONS=1`` for the pure one).  The
whole request, over HTTP: ``benchmarks/keys_overhead.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aigateway import shm
from aigateway.keys.gate import KeyGate
from aigateway.keys.ring import KeyRing
from aigateway.keys.service import KEYS_REGION, region_spec
from aigateway.keys.slots import HEAD, SLOT, KeySlots
from aigateway.keys.spend import SpendLog
from aigateway.keys.store import SqliteKeyStore
from aigateway.pricing import PriceTable
from aigateway.wire import ApiRequest

LIMITS = {
    "rpm": 10**9, "tpm": 10**11, "max_parallel": 10**5, "budget_usd": 1e9,
    "budget_period": "month", "models": ["gpt-4o-mini"],
}  # fmt: skip
USAGE = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("keys")
    segment = shm.create_segment(
        shm.NodeLayout(regions=(region_spec(16),)), f"{shm.segment_name()}.bench-keys"
    )
    store = SqliteKeyStore(str(directory))
    key, secret = store.create({"name": "bench", **LIMITS})
    slots = KeySlots(segment.region(KEYS_REGION, HEAD, SLOT), segment.region_lock_path(KEYS_REGION))
    ring = KeyRing(store, slots)
    gate = KeyGate(ring, SpendLog(store, 1.0), PriceTable.shipped())
    request = ApiRequest(
        "chat", "gpt-4o-mini",
        {"messages": [{"role": "user", "content": "Say hello to the benchmark"}]},
        b"", tenant=key.id,
    )  # fmt: skip
    yield {"ring": ring, "gate": gate, "secret": secret, "request": request}
    slots.close()
    store.close()
    segment.close()
    segment.unlink()


def test_key_find_by_secret(benchmark: Any, keyed: dict[str, Any]) -> None:
    benchmark.group = "tenant key, per request"
    benchmark(keyed["ring"].find, keyed["secret"])


def test_key_admit_and_release(benchmark: Any, keyed: dict[str, Any]) -> None:
    """Every request, hits included: model, rpm, a place in flight, taken and given back."""
    benchmark.group = "tenant key, per request"
    gate, request = keyed["gate"], keyed["request"]
    benchmark(lambda: gate.admit(request).release())


def test_key_reserve_and_settle(benchmark: Any, keyed: dict[str, Any]) -> None:
    """Every provider call: tpm and budget reserved by estimate, settled by usage."""
    benchmark.group = "tenant key, per request"
    gate, request = keyed["gate"], keyed["request"]

    def call() -> None:
        held = gate.reserve(request, "gpt-4o-mini")
        held.settle_usage(USAGE)

    benchmark(call)
