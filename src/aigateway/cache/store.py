"""The node's response cache, kept in LMDB so every worker process shares one cache.

LMDB is a memory-mapped B-tree made for this: many readers and one writer across
processes, crash-safe, with reads that cost about a microsecond. The environment lives
on tmpfs (``/dev/shm``) beside the server, so it survives worker restarts and goes away
with the server.

Databases inside the environment:

    entries   key -> header + answer (the OpenAI completion JSON)
    meta      key -> header only (expiry, size, hits), scanned for eviction
    counters  name -> uint64: node totals (hits, misses, evictions, avoided calls ...)

Beside them, the file ``flights`` holds the node's calls in flight (key -> owner pid +
deadline, for the de-duplication across workers) as a small fixed-size table in shared
memory (``hotpath.FlightTable``): a claim is one compare-and-swap, not an LMDB write
transaction behind the node-wide writer lock.

Reads never write: hit counts and counters are summed per worker and flushed in one
write transaction at most every ``FLUSH_INTERVAL_S`` (so a hit costs one read). A miss
costs one write transaction, the answer's; its claim is cleared just after the commit (a
worker waiting for the answer never finds neither the claim nor the answer). The map is
writable (``writemap``): commits write into tmpfs pages directly instead of copying dirty
pages out with ``pwrite``, which made a miss's writes three times cheaper (28 µs -> 9 µs,
measured in isolation).

Retention: the ``max_bytes`` budget counts the LMDB pages the entries occupy (B-tree
pages are partly empty, and ``meta`` repeats each header: the pages take three to four
times the entries' own bytes, which ``bytes`` counts). When a write takes the pages over
the budget, entries are evicted until their bytes fit ``LOW_WATER`` of it at the current
ratio of pages to bytes: expired ones first, then those with the lowest score
``(hits + 1) / (age_s + 60)``, so among entries of the same age the ones with few hits go
before popular ones, and a popular entry still ages out eventually. A large cache
chooses among a random sample (runs of consecutive keys from random places, four times
the entries to evict) rather than among all entries, as Redis does; and it evicts 3% at
a time: with 200,000 entries a full scan evicting a tenth paused the writer for 0.5 s,
a sampled 3% for 0.1 s. Expired entries are never served and are swept in the
background.

The map is sized well above the budget (it is address space: tmpfs pages exist only once
written) so that pages freed but not yet reusable never fill it; if it fills anyway, a
write evicts half the entries (or, if even deleting needs pages it does not have, empties
the cache) and tries once more; and a cache that cannot write never fails a request: the
caller answers without storing.
"""

from __future__ import annotations

import hashlib
import heapq
import mmap
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import lmdb

from aigateway.hotpath import FlightTable

# expires_at, created, size, hits, prompt_tokens, completion_tokens, label length; then
# the label (provider NUL model) and, in `entries` only, the answer.
_HEADER = struct.Struct("<ddQQIII")
_U64 = struct.Struct("<Q")
FLIGHTS_FILE = "flights"  # in the environment's directory
FLIGHT_SLOTS = 4096  # calls in flight on the node that de-duplication tracks at once
LOW_WATER = 0.97  # evict a small slice at a time: short pauses for the writer
SAMPLE_FACTOR = 4  # a large cache's eviction looks at this many times the entries it evicts
SAMPLE_RUN = 32  # consecutive keys read from each random place
MAP_FULL_KEEP = 0.5  # the map filled up anyway: keep half of the entries' bytes
FLUSH_INTERVAL_S = 0.5


@dataclass(slots=True)
class CacheEntry:
    body: bytes  # the OpenAI chat.completion JSON
    provider: str
    model: str
    created: float
    expires_at: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hits: int = 0  # as of when it was written; live counts are in `meta`


def _pack(entry: CacheEntry) -> tuple[bytes, bytes]:
    label = f"{entry.provider}\x00{entry.model}".encode()
    size = len(label) + len(entry.body) + _HEADER.size
    header = _HEADER.pack(
        entry.expires_at, entry.created, size, entry.hits, entry.prompt_tokens,
        entry.completion_tokens, len(label),
    )  # fmt: skip
    meta = header + label
    return meta, meta + entry.body


def _unpack_meta(raw: Any) -> tuple[float, float, int, int, int, int, str, str, int]:
    """The header fields, provider and model, and where the answer starts."""
    expires_at, created, size, hits, prompt, completion, label_len = _HEADER.unpack_from(raw)
    end = _HEADER.size + label_len
    provider, _, model = bytes(raw[_HEADER.size : end]).decode().partition("\x00")
    return expires_at, created, size, hits, prompt, completion, provider, model, end


def encode_entry(entry: CacheEntry) -> bytes:
    """``entry`` as the ``entries`` database keeps it (and the shared tier in Redis)."""
    return _pack(entry)[1]


def decode_entry(raw: bytes, expires_at: float) -> CacheEntry:
    """An entry from ``encode_entry``'s bytes, expiring at ``expires_at`` (the holder's
    clock, not the writer's); ``ValueError`` for bytes that are not one."""
    try:
        _, created, size, hits, prompt, completion, provider, model, end = _unpack_meta(raw)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a cache entry: {exc}") from None
    if size != len(raw) or end > size:
        raise ValueError("not a cache entry: its size does not match")
    return CacheEntry(raw[end:], provider, model, created, expires_at, prompt, completion, hits)


class LmdbStore:
    """One worker's handle on the node's cache."""

    def __init__(self, path: str, max_bytes: int, map_bytes: int | None = None) -> None:
        """``map_bytes``: the size of the map (default: four times the budget, at least
        256 MB; it costs address space only)."""
        os.makedirs(path, exist_ok=True)
        self.max_bytes = max_bytes
        # The budget's pages, plus pages freed but still held for readers, plus the
        # free list and the copies a write transaction makes before it commits.
        map_size = map_bytes or max(4 * max_bytes + (64 << 20), 256 << 20)
        self._env = lmdb.open(
            path, map_size=map_size, max_dbs=4,
            subdir=True, sync=False, metasync=False, lock=True, readahead=False, writemap=True,
        )  # fmt: skip
        self._page_size: int = self._env.stat()["psize"]
        self._entries = self._env.open_db(b"entries")
        self._meta = self._env.open_db(b"meta")
        self._counters = self._env.open_db(b"counters")
        self._pending_hits: Counter[bytes] = Counter()
        self._pending_counts: Counter[str] = Counter()
        self._last_flush = time.monotonic()
        self._pid = os.getpid()
        self._claimed: set[bytes] = set()  # in-flight marks this process wrote
        self._flights_map, self._flights = _open_flights(os.path.join(path, FLIGHTS_FILE))

    def close(self) -> None:
        self.flush()
        self._env.close()
        self._flights.close()
        self._flights_map.close()

    # -- reads ------------------------------------------------------------------------

    def get(self, key: bytes, now: float | None = None) -> CacheEntry | None:
        now = time.time() if now is None else now
        with self._env.begin(db=self._entries, buffers=True) as txn:
            raw = txn.get(key)
            if raw is None:
                return None
            expires_at, created, _, hits, prompt, completion, provider, model, end = _unpack_meta(
                raw
            )
            if expires_at <= now:
                return None
            body = bytes(raw[end:])
        self._pending_hits[key] += 1
        return CacheEntry(body, provider, model, created, expires_at, prompt, completion, hits)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a node-wide counter (flushed with the hit counts)."""
        self._pending_counts[name] += n

    # -- writes -----------------------------------------------------------------------

    def put(self, key: bytes, entry: CacheEntry) -> None:
        """Store ``entry``; an in-flight mark this process holds on ``key`` goes with it
        (once the entry is written). Raises ``lmdb.Error`` only if even a harder eviction
        leaves no room."""
        try:
            self._put(key, entry)
        except lmdb.MapFullError:
            self.count("map_full")
            try:
                self._make_room()
            except lmdb.MapFullError:
                self.clear()  # too full even to delete: dropping whole trees still works
            self._put(key, entry)
        self.release_flight(key)

    def _make_room(self) -> None:
        """The map is full: halve the entries' bytes, a sixteenth per transaction (even a
        delete needs fresh pages, and each commit frees pages the next one can use)."""
        with self._env.begin(db=self._counters) as txn:
            raw = txn.get(b"bytes")
        total = _U64.unpack(raw)[0] if raw is not None else 0
        target, step = int(total * MAP_FULL_KEEP), max(total // 16, 1)
        while total > target:
            with self._env.begin(write=True) as txn:
                left = self._evict_to(txn, max(target, total - step), total, time.time())
            if left == total:
                return  # nothing left to evict
            total = left

    def _put(self, key: bytes, entry: CacheEntry) -> None:
        meta, value = _pack(entry)
        size = _HEADER.unpack_from(meta)[2] + len(key)
        with self._env.begin(write=True) as txn:
            old = txn.get(key, db=self._meta)
            old_size = _HEADER.unpack_from(old)[2] + len(key) if old is not None else 0
            txn.put(key, value, db=self._entries)
            txn.put(key, meta, db=self._meta)
            total = self._add(txn, "bytes", size - old_size)
            if old is None:
                self._add(txn, "entries", 1)
            if self._footprint(txn) > self.max_bytes:
                self._evict(txn, total, time.time())

    def clear(self) -> int:
        """Empty the cache for the whole node; the counters stay (they never go down)."""
        with self._env.begin(write=True) as txn:
            removed = txn.stat(self._meta)["entries"]
            txn.drop(self._entries, delete=False)
            txn.drop(self._meta, delete=False)
            txn.put(b"bytes", _U64.pack(0), db=self._counters)
            txn.put(b"entries", _U64.pack(0), db=self._counters)
        return int(removed)

    def sweep(self, now: float | None = None) -> int:
        """Delete expired entries; returns how many."""
        now = time.time() if now is None else now
        with self._env.begin(write=True) as txn:
            expired = [
                (bytes(key), _HEADER.unpack_from(raw)[2] + len(key))
                for key, raw in txn.cursor(db=self._meta)
                if _HEADER.unpack_from(raw)[0] <= now
            ]
            for key, size in expired:
                self._delete(txn, key, size)
            if expired:
                self._add(txn, "expirations", len(expired))
        return len(expired)

    def flush(self, force: bool = True) -> None:
        """Write this worker's pending hit counts and counters to the node's totals."""
        if not force and time.monotonic() - self._last_flush < FLUSH_INTERVAL_S:
            return
        self._last_flush = time.monotonic()
        if not self._pending_hits and not self._pending_counts:
            return
        hits, counts = self._pending_hits, self._pending_counts
        self._pending_hits, self._pending_counts = Counter(), Counter()
        with self._env.begin(write=True) as txn:
            for key, n in hits.items():
                raw = txn.get(key, db=self._meta)
                if raw is None:
                    continue  # evicted meanwhile
                # Only `meta` keeps live hit counts: they serve eviction and reporting.
                fields = list(_HEADER.unpack_from(raw))
                fields[3] += n
                txn.put(key, _HEADER.pack(*fields) + bytes(raw[_HEADER.size :]), db=self._meta)
            for name, n in counts.items():
                self._add(txn, name, n)

    # -- in-flight markers (de-duplication across workers) -------------------------------

    def claim_flight(self, key: bytes, deadline: float) -> tuple[int, float] | None:
        """Mark ``key`` as being fetched by this process; the current owner if another is.
        A mark that cannot be written (more calls in flight around it than the table
        holds) only costs the de-duplication across workers: the caller fetches as if it
        held it."""
        holder = self._flights.claim(_flight_key(key), self._pid, deadline, time.time())
        if holder is None:
            self._claimed.add(key)
        return holder

    def flight_owner(self, key: bytes) -> tuple[int, float] | None:
        return self._flights.owner(_flight_key(key), time.time())

    def release_flight(self, key: bytes) -> None:
        """Clear this process's in-flight mark on ``key`` (a no-op once ``put`` cleared it)."""
        if key in self._claimed:
            self._claimed.discard(key)
            self._flights.release(_flight_key(key), self._pid)

    def drop_dead_flights(self, gone: Callable[[int], bool]) -> list[tuple[bytes, int]]:
        """Clear the in-flight marks whose owner is ``gone`` (a worker that died: its
        followers need not wait for its deadline) or whose deadline passed; the
        (key, owner pid) of the live marks of dead owners cleared (the node agent releases
        their claims in the cluster too)."""
        return self._flights.drop(gone, self._pid, time.time())

    # -- reporting ----------------------------------------------------------------------

    def footprint(self) -> int:
        """Bytes of the LMDB pages the entries occupy: what the budget limits."""
        with self._env.begin() as txn:
            return self._footprint(txn)

    def counters(self) -> dict[str, int]:
        self.flush()
        with self._env.begin(db=self._counters) as txn:
            return {bytes(k).decode(): _U64.unpack(v)[0] for k, v in txn.cursor()}

    def top_entries(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most-hit live entries: keys and models only, never prompt text."""
        now = time.time()
        rows = []
        with self._env.begin(db=self._meta) as txn:
            for key, raw in txn.cursor():
                expires_at, _, size, hits, _, _, provider, model, _ = _unpack_meta(raw)
                if expires_at > now:
                    rows.append((hits, bytes(key).hex(), provider, model, size, expires_at - now))
        rows.sort(reverse=True)
        return [
            {"key": k, "provider": p, "model": m, "hits": h, "bytes": s, "ttl_s": round(t, 1)}
            for h, k, p, m, s, t in rows[:limit]
        ]

    # -- internals ----------------------------------------------------------------------

    def _add(self, txn: lmdb.Transaction, name: str, n: int) -> int:
        key = name.encode()
        raw = txn.get(key, db=self._counters)
        value = max(0, (_U64.unpack(raw)[0] if raw is not None else 0) + n)
        txn.put(key, _U64.pack(value), db=self._counters)
        return value

    def _delete(self, txn: lmdb.Transaction, key: bytes, size: int) -> None:
        txn.delete(key, db=self._entries)
        txn.delete(key, db=self._meta)
        self._add(txn, "bytes", -size)
        self._add(txn, "entries", -1)

    def _footprint(self, txn: lmdb.Transaction) -> int:
        """Bytes of the pages the entries occupy (both databases that hold them)."""
        pages = 0
        for db in (self._entries, self._meta):
            stat = txn.stat(db)
            pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return pages * self._page_size

    def _evict(self, txn: lmdb.Transaction, total: int, now: float) -> None:
        """Bring the pages back under the budget: evict until the entries' bytes fit
        ``LOW_WATER`` of it at the current ratio of pages to bytes."""
        footprint = max(self._footprint(txn), 1)
        self._evict_to(txn, int(total * LOW_WATER * self.max_bytes / footprint), total, now)

    def _evict_to(self, txn: lmdb.Transaction, target: int, total: int, now: float) -> int:
        """Delete the least valuable entries until their bytes are at most ``target``;
        the bytes left."""
        if total <= target:
            return total
        raw = txn.get(b"entries", db=self._counters)
        count = max(_U64.unpack(raw)[0] if raw is not None else 1, 1)
        # How many to evict: enough for the excess at the average size, with margin.
        wanted = int((total - target) / max(total / count, 1.0) * 1.2) + 8
        cursor = txn.cursor(db=self._meta)
        if count <= SAMPLE_FACTOR * wanted + SAMPLE_RUN:
            rows: Iterable[tuple[Any, Any]] = cursor  # a small cache: look at all
        else:
            # A large one: random runs of consecutive keys (keys are uniform hashes), so
            # an eviction reads a few times the entries it removes, not the whole cache.
            rows = _sample(cursor, SAMPLE_FACTOR * wanted)

        def candidates() -> Iterator[tuple[float, float, bytes, int]]:
            for key, raw in rows:
                expires_at, created, size, hits, *_ = _HEADER.unpack_from(raw)
                score = -1.0 if expires_at <= now else (hits + 1) / (max(now - created, 0.0) + 60.0)
                yield score, created, bytes(key), size + len(key)

        evicted = 0
        for _, _, key, size in heapq.nsmallest(wanted, candidates()):
            if total <= target:
                break
            self._delete(txn, key, size)
            total -= size
            evicted += 1
        self._add(txn, "evictions", evicted)
        return total


def _sample(cursor: lmdb.Cursor, size: int) -> list[tuple[bytes, bytes]]:
    """About ``size`` distinct (key, header) rows, in runs of ``SAMPLE_RUN`` consecutive
    keys that start at random places."""
    rows: dict[bytes, bytes] = {}
    for _ in range(size // SAMPLE_RUN + 1):
        if not cursor.set_range(os.urandom(16)) and not cursor.first():
            break
        for _, (key, raw) in zip(range(SAMPLE_RUN), cursor.iternext(), strict=False):
            rows[bytes(key)] = bytes(raw)
    return list(rows.items())


def _flight_key(key: bytes) -> bytes:
    """The table's 16-byte key: a cache key is one already (an XXH3-128 digest)."""
    return key if len(key) == 16 else hashlib.blake2b(key, digest_size=16).digest()


def _open_flights(path: str) -> tuple[mmap.mmap, FlightTable]:
    """The node's flight table in the file ``path`` (made, zeroed, by the first process to
    open it; every process of the node maps the same pages)."""
    size = FlightTable.size(FLIGHT_SLOTS)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # zeros: an empty table (racing openers agree)
        mapping = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    try:
        return mapping, FlightTable(mapping, FLIGHT_SLOTS, lock_path=path)
    except BaseException:
        mapping.close()
        raise
