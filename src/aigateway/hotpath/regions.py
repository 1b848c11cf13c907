"""Shared-memory regions of the hot paths: their declared layouts, and the pure twins' lock.

A *region* is a piece of a writable buffer (usually a slice of the node's shared-memory
segment, see ``aigateway.shm``) that a hot-path object lives in.  Its layout is declared
once below (``aigateway.shm_layout``): the pure twins take their word indices from the
declaration, the compiled twins mirror it as C structs (``ext/*.pxd``) and check at
import that their offsets are the declared ones.  Every region starts with a 4-byte
magic and a 4-byte version, and records the pid of the process that initialised it and a
random 64-bit id.  The buffer must start on an 8-byte boundary (a page-aligned mapping
plus offsets that are multiples of 64 always do).

Token bucket (``BUCKET``, ``TokenBucket.SIZE`` bytes)::

    0    u32     magic        "AGTB"
    4    u32     version      REGION_VERSION
    8    f64     rate_per_s
    16   f64     burst
    24   i64     tat_ns       GCRA: CLOCK_MONOTONIC ns at which it is full again
    32   i64     creator_pid  pid of the initialising process
    40   u64     region_id    random: names the pure twins' lock file
    48   u64[2]  reserved     zero
    64   (end)

The bucket is kept as GCRA (the "generic cell rate algorithm", the virtual-scheduling
form of a token bucket): ``tat_ns`` is the CLOCK_MONOTONIC time in nanoseconds at which
the bucket would be full again.  Tokens available at ``now`` are
``burst - max(0, tat_ns - now) * rate / 1e9``; taking ``n`` tokens moves ``tat_ns`` to
``max(tat_ns, now) + ceil(n * 1e9 / rate)``.  The whole state is that one 64-bit word, so
the compiled twin takes tokens with a single compare-and-swap (no lock to be left held by
a killed process); CLOCK_MONOTONIC is one clock for every process of a Linux host.

Shared stats (``SharedStats.buffer_size(schema, slots)`` bytes): a header
(``STATS_HEADER``)::

    0    u32  magic            "AGST"
    4    u32  version          REGION_VERSION
    8    u64  fingerprint      StatsSchema.fingerprint
    16   u32  slots
    20   u32  slot_size        bytes, a multiple of 64
    24   i64  creator_pid      pid of the initialising process
    32   u64  region_id        random: names the pure twins' lock file
    40   u32  counters
    44   u32  gauges
    48   u32  histograms
    52   u32  histogram_words
    56   u64  reserved         zero
    64   (end)

then ``slots`` slots of ``slot_size`` bytes, each a head (``SLOT_HEAD``)::

    0    i64  owner_pid  0: free
    8    u64  claims     how often the slot was taken (informational)
    16   (end)

followed by the schema's values (``StatsSchema``): ``u64 counters[counters]``,
``i64 gauges[gauges]``, and for each histogram ``u64 counts[len(bounds) + 1]`` and an
``f64`` sum.

Each slot has a single writer, its owner; readers sum the slots.

Flights (``FlightTable.size(slots)`` bytes): the node's calls in flight, for the
de-duplication across workers.  A header (``FLIGHTS_HEADER``)::

    0    u32     magic     "AGFL"
    4    u32     version   REGION_VERSION
    8    u32     slots     a power of two
    12   u32     window    the slots a key may sit in, from its home slot on
    16   u64[6]  reserved  zero
    64   (end)

then ``slots`` slots (``FLIGHT_SLOT``)::

    0    bytes[16]  key       the cache key
    16   u64        owner     deadline_ms << 22 | pid; 0: free
    24   u64        reserved  zero
    32   (end)

A slot's whole claim is its ``owner`` word (the owner's pid, whose maximum on Linux is
2^22, and its deadline in wall-clock milliseconds), so the compiled twin takes, replaces and
clears a claim with one compare-and-swap: no lock a killed worker could leave held.

The compiled twins use C atomics on these words.  The pure twins cannot, so they take a
lock around each change: a ``threading.Lock`` and, when the buffer is backed by a memory
mapping (shared memory), an exclusive ``flock`` on a file named after the region,
``LOCK_DIR/aigateway-<pid>.lock-<id>`` (the kernel drops it when a holder dies).  The two
twins use the same layout, so either can attach to a region the other initialised; they
must not, however, *write* one region at the same time (the pure twin's lock does not
exclude the compiled twin's atomics).

The health board's window buckets (``WINDOW_BUCKET``, drawn in ``aigateway.core.health``)
are counted into by ``CallWindow``: the compiled twin adds with atomics, so a call's
outcome is recorded without the region's lock; the pure twin (``ATOMIC_WINDOW = False``) is
called under it.

The node's other regions (``aigateway.stats.series``, ``aigateway.core.health``,
``aigateway.runtime``) declare their layouts the same way and use ``RegionLock`` and
``pid_alive`` from here; so does the node's cache (``aigateway.cache``).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import tempfile
import threading
from types import TracebackType
from typing import Any, Final

from aigateway.shm_layout import Field, Layout

__all__ = (
    "BUCKET",
    "BUCKET_MAGIC",
    "CLOSED_BUCKET",
    "CLOSED_FLIGHTS",
    "CLOSED_STATS",
    "FLIGHTS_HEADER",
    "FLIGHTS_MAGIC",
    "FLIGHT_SLOT",
    "LOCK_DIR",
    "REGION_VERSION",
    "SLOT_HEAD",
    "STATS_HEADER",
    "STATS_MAGIC",
    "WINDOW_BUCKET",
    "RegionLock",
    "buffer_address",
    "lock_path",
    "pid_alive",
    "shared_backing",
)

REGION_VERSION: Final = 1
BUCKET_MAGIC: Final = int.from_bytes(b"AGTB", "little")
STATS_MAGIC: Final = int.from_bytes(b"AGST", "little")
FLIGHTS_MAGIC: Final = int.from_bytes(b"AGFL", "little")

# Every region of a hot path has these (the magic first, then its version).
_VERSION = Field("version", "u32", doc="REGION_VERSION")
_PID = Field("creator_pid", "i64", doc="pid of the initialising process")
_ID = Field("region_id", "u64", doc="random: names the pure twins' lock file")

#: A ``TokenBucket`` (its ``SIZE``); ``ext/_bucket_c.pxd`` mirrors it as ``BucketRegion``.
BUCKET: Final = Layout(
    "token bucket",
    (
        Field("magic", "u32", doc='"AGTB"'),
        _VERSION,
        Field("rate_per_s", "f64"),
        Field("burst", "f64"),
        Field("tat_ns", "i64", doc="GCRA: CLOCK_MONOTONIC ns at which it is full again"),
        _PID,
        _ID,
        Field("reserved", "u64", 2, doc="zero"),
    ),
)

#: The head of a ``SharedStats`` region (``StatsHeader`` in ``ext/_stats_c.pxd``).
STATS_HEADER: Final = Layout(
    "stats header",
    (
        Field("magic", "u32", doc='"AGST"'),
        _VERSION,
        Field("fingerprint", "u64", doc="StatsSchema.fingerprint"),
        Field("slots", "u32"),
        Field("slot_size", "u32", doc="bytes, a multiple of 64"),
        _PID,
        _ID,
        Field("counters", "u32"),
        Field("gauges", "u32"),
        Field("histograms", "u32"),
        Field("histogram_words", "u32"),
        Field("reserved", "u64", doc="zero"),
    ),
)

#: The head of a slot, in the stats and in the series table (``SlotHeader``).
SLOT_HEAD: Final = Layout(
    "slot head",
    (
        Field("owner_pid", "i64", doc="0: free"),
        Field("claims", "u64", doc="how often the slot was taken (informational)"),
    ),
)

#: The head of a ``FlightTable`` region (``FlightsHeader`` in ``ext/_flights_c.pxd``).
FLIGHTS_HEADER: Final = Layout(
    "flights header",
    (
        Field("magic", "u32", doc='"AGFL"'),
        _VERSION,
        Field("slots", "u32", doc="a power of two"),
        Field("window", "u32", doc="the slots a key may sit in, from its home slot on"),
        Field("reserved", "u64", 6, doc="zero"),
    ),
)

#: One claim of a ``FlightTable`` (``FlightSlot``).
FLIGHT_SLOT: Final = Layout(
    "flight slot",
    (
        Field("key", "bytes", 16, doc="the cache key"),
        Field("owner", "u64", doc="deadline_ms << 22 | pid; 0: free"),
        Field("reserved", "u64", doc="zero"),
    ),
)

#: One time bucket of a sliding window of calls (``core.health``'s window; ``WindowBucket``
#: in ``ext/_window_c.pxd``): ``CallWindow`` counts into it.
WINDOW_BUCKET: Final = Layout(
    "bucket",
    (
        Field("epoch", "u64", doc="int(now / 5 s) + 1 of the calls counted"),
        Field("calls", "u64"),
        Field("failures", "u64"),
        Field("seconds", "f64", doc="their summed latency"),
    ),
)

#: Where the pure twins keep their lock files (the shared-memory file system on Linux).
LOCK_DIR: Final = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class _Closed:
    """Stands in for the views of a closed object: any use raises ``ValueError``."""

    __slots__ = ("_message",)

    def __init__(self, message: str) -> None:
        self._message = message

    def __getitem__(self, index: object) -> Any:
        raise ValueError(self._message)

    def __setitem__(self, index: object, value: object) -> None:
        raise ValueError(self._message)


CLOSED_BUCKET: Any = _Closed("the token bucket is closed")
CLOSED_STATS: Any = _Closed("the shared stats are closed")
CLOSED_FLIGHTS: Any = _Closed("the flight table is closed")


def lock_path(creator_pid: int, region_id: int) -> str:
    """The lock file of a region, named so that ``aigateway.shm`` can clean it up."""
    return os.path.join(LOCK_DIR, f"aigateway-{creator_pid}.lock-{region_id:016x}")


def shared_backing(buffer: object) -> bool:
    """Whether ``buffer`` is backed by a memory mapping, i.e. may be shared by processes."""
    if isinstance(buffer, memoryview):
        buffer = buffer.obj
    return isinstance(buffer, mmap.mmap)


def buffer_address(view: memoryview) -> int:
    """The address of the first byte of a writable buffer."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # releases the export at once


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie or another user's process counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# This process's pid, kept by a fork hook: ``RegionLock.__enter__`` compares it on every
# entry, and ``os.getpid`` is a system call (two of them on every tenant key's call).
_this_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _this_pid.__setitem__(0, os.getpid()))


class RegionLock:
    """Mutual exclusion on one region for the pure twins, across threads and processes.

    ``path=None`` excludes the threads of this process only (a private buffer).  Otherwise
    ``flock`` on the lock file excludes other processes; the file is opened on first use
    and again in a child after a fork (a forked child must not share the parent's open
    file description: ``flock`` would then not tell them apart).
    """

    __slots__ = ("_fd", "_path", "_pid", "_thread_lock")

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._fd = -1
        self._pid = 0
        self._thread_lock = threading.Lock()

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._path is None:
            return
        try:
            if self._pid != _this_pid[0]:
                self._open()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._path is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1
        self._pid = 0

    def __del__(self) -> None:
        self.close()

    def _open(self) -> None:
        assert self._path is not None
        if self._fd >= 0:
            os.close(self._fd)  # our copy of the parent's descriptor, after a fork
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = _this_pid[0]
