"""The node's cache store (LMDB) and the completion <-> stream conversions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from aigateway.cache import node_cache
from aigateway.cache.replay import assemble, is_cacheable, replay
from aigateway.cache.store import CacheEntry, LmdbStore


def entry(body: bytes = b'{"x": 1}', ttl: float = 60.0, created: float | None = None) -> CacheEntry:
    now = time.time() if created is None else created
    return CacheEntry(body, "openai", "gpt-4o-mini", now, now + ttl, 10, 5)


@pytest.fixture
def store(tmp_path: Path) -> LmdbStore:
    opened = LmdbStore(str(tmp_path / "cache"), max_bytes=64 * 1024)
    yield opened  # type: ignore[misc]
    opened.close()


def test_a_stored_entry_is_read_back(store: LmdbStore) -> None:
    store.put(b"k" * 16, entry(b'{"answer": 42}'))
    found = store.get(b"k" * 16)
    assert found is not None
    assert (found.body, found.provider, found.model) == (b'{"answer": 42}', "openai", "gpt-4o-mini")
    assert (found.prompt_tokens, found.completion_tokens) == (10, 5)


def test_an_expired_entry_is_never_served_and_is_swept(store: LmdbStore) -> None:
    store.put(b"old", entry(ttl=0.01))
    time.sleep(0.02)
    assert store.get(b"old") is None
    assert store.sweep() == 1
    assert store.counters()["expirations"] == 1
    assert store.counters()["entries"] == 0


def test_another_process_on_the_same_directory_sees_the_same_cache(
    store: LmdbStore, tmp_path: Path
) -> None:
    store.put(b"shared", entry())
    script = (
        "import sys; from aigateway.cache.store import LmdbStore\n"
        "s = LmdbStore(sys.argv[1], 64 * 1024)\n"
        "assert s.get(b'shared') is not None\n"
        "s.clear(); s.close()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache")], check=True)
    assert store.get(b"shared") is None


def test_sizes_are_accounted_and_the_budget_holds(store: LmdbStore) -> None:
    body = b"x" * 1000
    for i in range(200):  # about three times the 64 KiB budget
        store.put(i.to_bytes(16, "big"), entry(body))
        assert store.counters()["bytes"] <= store.max_bytes
    counters = store.counters()
    assert counters["evictions"] > 0
    assert counters["entries"] * 1000 <= store.max_bytes


def test_eviction_keeps_popular_entries_of_the_same_age(store: LmdbStore) -> None:
    created = time.time()
    store.put(b"popular", entry(b"p" * 1000, created=created))
    for _ in range(5):
        store.get(b"popular")
    store.flush()
    for i in range(200):
        store.put(i.to_bytes(16, "big"), entry(b"x" * 1000, created=created))
    assert store.get(b"popular") is not None


def test_the_budget_limits_the_pages_the_entries_occupy_not_only_their_bytes(
    tmp_path: Path,
) -> None:
    # B-tree pages are partly empty and meta repeats each header: pages run to three or
    # four times the bytes. A 1 MiB budget must hold for the pages themselves.
    store = LmdbStore(str(tmp_path / "cache"), max_bytes=1 << 20)
    try:
        for i in range(5000):  # about 3 MB of answers
            store.put(i.to_bytes(16, "big"), entry(b"x" * 500))
        assert store.footprint() <= store.max_bytes
        assert store.counters()["evictions"] > 0
    finally:
        store.close()


def test_a_full_map_makes_room_instead_of_failing_the_write(tmp_path: Path) -> None:
    # A map far smaller than the budget: the pages fill it before the budget is reached.
    store = LmdbStore(str(tmp_path / "cache"), max_bytes=64 << 20, map_bytes=2 << 20)
    try:
        for i in range(20_000):  # about 10 MB of answers into a 2 MB map
            store.put(i.to_bytes(16, "big"), entry(b"x" * 500))
        assert store.get((19_999).to_bytes(16, "big")) is not None  # the latest is kept
        assert store.counters()["map_full"] > 0
    finally:
        store.close()


def test_an_answer_larger_than_the_map_is_refused_with_an_lmdb_error(tmp_path: Path) -> None:
    import lmdb

    store = LmdbStore(str(tmp_path / "cache"), max_bytes=64 << 20, map_bytes=1 << 20)
    try:
        with pytest.raises(lmdb.Error):
            store.put(b"huge", entry(b"x" * (2 << 20)))
        store.put(b"small", entry())  # and the store goes on working
        assert store.get(b"small") is not None
    finally:
        store.close()


def test_hits_are_counted_node_wide_after_a_flush(store: LmdbStore) -> None:
    store.put(b"k", entry())
    store.get(b"k")
    store.get(b"k")
    store.count("hits", 2)
    store.flush()
    assert store.counters()["hits"] == 2
    assert store.top_entries()[0]["hits"] == 2


def test_an_in_flight_mark_of_another_live_process_is_reported(store: LmdbStore) -> None:
    import os

    assert store.claim_flight(b"k", time.time() + 5) is None  # ours now
    assert store.flight_owner(b"k") == (os.getpid(), pytest.approx(time.time() + 5, abs=1))
    store.release_flight(b"k")
    assert store.flight_owner(b"k") is None


def test_storing_the_answer_clears_this_process_in_flight_mark_in_the_same_write(
    store: LmdbStore,
) -> None:
    assert store.claim_flight(b"k", time.time() + 5) is None
    store.put(b"k", entry())
    assert store.flight_owner(b"k") is None
    store.release_flight(b"k")  # the leader's usual release afterwards is harmless
    assert store.get(b"k") is not None


def test_a_process_never_clears_an_in_flight_mark_it_does_not_hold(
    store: LmdbStore, tmp_path: Path
) -> None:
    # Another worker: claims the key, says so, and stays alive until told to go.
    script = (
        "import sys, time\n"
        "from aigateway.cache.store import LmdbStore\n"
        "s = LmdbStore(sys.argv[1], 64 * 1024)\n"
        "assert s.claim_flight(b'k', time.time() + 30) is None\n"
        "print('claimed', flush=True)\n"
        "sys.stdin.read()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "cache")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline() == "claimed\n"
        store.release_flight(b"k")
        store.put(b"k", entry())
        assert store.flight_owner(b"k") == (other.pid, pytest.approx(time.time() + 30, abs=5))
    finally:
        other.communicate("")


def test_stale_cache_directories_of_dead_servers_are_removed(tmp_path: Path) -> None:
    (tmp_path / "aigateway-cache-999999999").mkdir()
    (tmp_path / f"aigateway-cache-{os_getppid()}").mkdir()
    assert node_cache.clean_stale(str(tmp_path)) == ["aigateway-cache-999999999"]
    assert (tmp_path / f"aigateway-cache-{os_getppid()}").exists()


def os_getppid() -> int:
    import os

    return os.getppid()


# --- completion <-> stream --------------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "one two three four five six seven"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
    "system_fingerprint": None,
}
TOOL_COMPLETION = {
    **COMPLETION,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location": "Paris", "unit": "celsius"}',
                        },
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
}


@pytest.mark.parametrize("completion", [COMPLETION, TOOL_COMPLETION])
def test_a_replayed_stream_reassembles_to_the_completion(completion: dict[str, object]) -> None:
    chunks = replay(completion, include_usage=True)
    assert len(chunks) > 3  # pieces, never one blob
    assert assemble(chunks) == completion


def test_usage_is_replayed_only_when_asked() -> None:
    assert all(orjson.loads(c).get("usage") is None for c in replay(COMPLETION, False))
    assert orjson.loads(replay(COMPLETION, True)[-1])["usage"]["total_tokens"] == 10


def test_a_stream_that_carried_an_error_assembles_to_nothing() -> None:
    assert assemble([replay(COMPLETION, False)[0], b'{"error": {"message": "x"}}']) is None


@pytest.mark.parametrize(
    ("finish", "body", "cacheable"),
    [
        ("stop", {}, True),
        ("tool_calls", {}, True),
        ("length", {}, False),
        ("length", {"max_tokens": 5}, True),
        ("content_filter", {}, False),
        (None, {}, False),
    ],
)
def test_only_final_answers_are_cacheable(
    finish: str | None, body: dict[str, object], cacheable: bool
) -> None:
    completion = {**COMPLETION, "choices": [{"index": 0, "message": {}, "finish_reason": finish}]}
    assert is_cacheable(completion, body) is cacheable
