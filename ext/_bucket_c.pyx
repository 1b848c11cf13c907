# cython: language_level=3
"""Token buckets, node-wide through shared memory (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._bucket_py``, which is the
specification; read it for the API and ``aigateway.hotpath.regions`` for the layout.

Algorithm
---------
The bucket is GCRA, the "virtual scheduling" form of a token bucket, whose whole state is
one 64-bit word in the shared region: ``tat_ns``, the CLOCK_MONOTONIC time (ns) at which
the bucket is full again.  With ``cost = ceil(tokens * 1e9 / rate)`` and the tolerance
``ceil((burst - reserve) * 1e9 / rate)``, an acquisition at ``now`` may move ``tat_ns`` to
``max(tat_ns, now) + cost`` as long as that stays within ``now + tolerance``; otherwise
the excess is the wait.  So ``try_acquire`` is: read the clock (vDSO, no system call),
load the rate and burst, load ``tat_ns``, compute, and publish the new ``tat_ns`` with one
compare-and-swap, retried if another process moved it in between.  Every grant is one
successful CAS on the same word, so tokens are neither lost nor granted twice, whatever
the number of processes; and no lock exists that a killed process could leave held.

``settle`` moves ``tat_ns`` by the tokens' time, later (a debit, even past the burst: a
debt) or earlier (a refund, never before ``now``: at most a full bucket), in the same CAS
loop; admission uses it to correct a reservation once a call's real cost is known.

``set_rate`` stores the new rate and burst, then re-expresses ``tat_ns`` so that the
tokens available stay the same (capped at the new burst), again with a CAS loop.  An
acquisition in another process that read the old rate just before may use it once.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.math cimport ceil, floor
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memset

from includes.atomics cimport (
    aigw_cas_i64,
    aigw_load_f64,
    aigw_load_i64,
    aigw_store_f64,
    aigw_store_i64,
)
from includes.system cimport aigw_monotonic_ns, getpid

import math
import os

from .regions import BUCKET, BUCKET_MAGIC, REGION_VERSION

__all__ = ("TokenBucket",)

cdef uint32_t _MAGIC = BUCKET_MAGIC
cdef uint32_t _VERSION = REGION_VERSION

# The C struct must be the declared layout: a mismatch fails the import, loudly.
cdef BucketRegion _probe
C_LAYOUTS = {
    "token bucket": (
        sizeof(BucketRegion),
        {
            "magic": <char*>&_probe.magic - <char*>&_probe,
            "version": <char*>&_probe.version - <char*>&_probe,
            "rate_per_s": <char*>&_probe.rate_per_s - <char*>&_probe,
            "burst": <char*>&_probe.burst - <char*>&_probe,
            "tat_ns": <char*>&_probe.tat_ns - <char*>&_probe,
            "creator_pid": <char*>&_probe.creator_pid - <char*>&_probe,
            "region_id": <char*>&_probe.region_id - <char*>&_probe,
            "reserved": <char*>&_probe.reserved - <char*>&_probe,
        },
    ),
}
BUCKET.check(*C_LAYOUTS["token bucket"])

cdef double _MAX_FILL_S = 1e9
cdef double _MAX_NOW_S = 4e9
cdef double _INF = math.inf


cdef int _check_rate(double rate_per_s, double burst) except -1:
    if not (0.0 < rate_per_s < _INF and 0.0 < burst < _INF):
        raise ValueError(
            f"rate_per_s and burst must be finite and > 0, not {rate_per_s!r}, {burst!r}"
        )
    if burst / rate_per_s > _MAX_FILL_S:
        raise ValueError("burst / rate_per_s must be at most 1e9 seconds")
    return 0


cdef inline int64_t _now_ns(object now) except? -1:
    cdef double seconds
    if now is None:
        return aigw_monotonic_ns()
    seconds = now
    if not (-_MAX_NOW_S < seconds < _MAX_NOW_S):
        raise ValueError(f"now must be a finite monotonic time in seconds, not {now!r}")
    return <int64_t>(seconds * 1e9)


@cython.final
cdef class TokenBucket:
    """A token bucket; with a shared buffer, one bucket for every process attached to it."""

    SIZE = BUCKET.size

    def __cinit__(self):
        self._has_view = False
        self._region = NULL

    def __init__(self, double rate_per_s, double burst, object buffer=None):
        cdef BucketRegion* region
        _check_rate(rate_per_s, burst)
        self._use(bytearray(sizeof(BucketRegion)) if buffer is None else buffer)
        region = self._region
        region_id = int.from_bytes(os.urandom(8), "little")
        memset(region, 0, sizeof(BucketRegion))
        region.rate_per_s = rate_per_s
        region.burst = burst
        region.creator_pid = getpid()
        region.region_id = region_id
        region.version = _VERSION
        region.magic = _MAGIC

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)

    @classmethod
    def attach(cls, object buffer):
        """The bucket already initialised in ``buffer`` (by any process, either twin)."""
        cdef TokenBucket bucket = TokenBucket.__new__(TokenBucket)
        bucket._use(buffer)
        region = bucket._region
        if region.magic != _MAGIC or region.version != _VERSION:
            raise ValueError("the buffer holds no token bucket (bad magic or version)")
        _check_rate(aigw_load_f64(&region.rate_per_s), aigw_load_f64(&region.burst))
        return bucket

    cdef int _use(self, object buffer) except -1:
        if self._has_view:  # __init__ called again
            self._region = NULL
            self._has_view = False
            PyBuffer_Release(&self._view)
        PyObject_GetBuffer(buffer, &self._view, PyBUF_SIMPLE)
        self._has_view = True
        if self._view.readonly:
            raise TypeError("a token bucket needs a writable buffer")
        if self._view.len < <Py_ssize_t>sizeof(BucketRegion):
            raise ValueError(
                f"a token bucket needs {sizeof(BucketRegion)} bytes, the buffer has {self._view.len}"
            )
        if <uintptr_t>self._view.buf % 8:
            raise ValueError("a token bucket's buffer must be 8-byte aligned")
        self._region = <BucketRegion*>self._view.buf
        return 0

    cdef BucketRegion* _live(self) except NULL:
        if self._region == NULL:
            raise ValueError("the token bucket is closed")
        return self._region

    @property
    def rate_per_s(self):
        return aigw_load_f64(&self._live().rate_per_s)

    @property
    def burst(self):
        return aigw_load_f64(&self._live().burst)

    def try_acquire(self, double tokens=1.0, object now=None, double reserve=0.0):
        """Take ``tokens`` (keeping ``reserve``): 0.0, or the seconds until possible."""
        cdef BucketRegion* region = self._region
        cdef int64_t now_ns = _now_ns(now)
        cdef double rate, burst
        cdef int64_t cost, tolerance, tat, new_tat
        if region == NULL:
            region = self._live()
        if not (tokens >= 0.0 and reserve >= 0.0):
            raise ValueError(f"tokens and reserve must be >= 0, not {tokens!r}, {reserve!r}")
        rate = aigw_load_f64(&region.rate_per_s)
        burst = aigw_load_f64(&region.burst)
        if tokens > burst - reserve:
            return _INF
        cost = <int64_t>ceil(tokens * 1e9 / rate)
        tolerance = <int64_t>ceil((burst - reserve) * 1e9 / rate)
        tat = aigw_load_i64(&region.tat_ns)
        while True:
            new_tat = (tat if tat > now_ns else now_ns) + cost
            if new_tat - now_ns > tolerance:
                return <double>(new_tat - now_ns - tolerance) / 1e9
            if cost == 0 or aigw_cas_i64(&region.tat_ns, &tat, new_tat):
                return 0.0
            # Another process took tokens in between: tat now holds its value; retry.

    def settle(self, double tokens, object now=None):
        """Take ``tokens`` more (> 0, even into debt) or give ``-tokens`` back (< 0)."""
        cdef BucketRegion* region = self._live()
        cdef int64_t now_ns = _now_ns(now)
        cdef int64_t tat, base, new_tat, cap
        cdef double rate, seconds
        if not (-_INF < tokens < _INF):
            raise ValueError(f"tokens must be a finite number, not {tokens!r}")
        rate = aigw_load_f64(&region.rate_per_s)
        cap = now_ns + <int64_t>(_MAX_FILL_S * 1e9)
        tat = aigw_load_i64(&region.tat_ns)
        while True:
            base = tat if tat > now_ns else now_ns
            if tokens >= 0.0:
                seconds = tokens / rate
                if seconds > _MAX_FILL_S:
                    seconds = _MAX_FILL_S
                new_tat = base + <int64_t>ceil(seconds * 1e9)
                if new_tat > cap:
                    new_tat = cap
            else:
                seconds = -tokens / rate
                if seconds > _MAX_FILL_S:
                    seconds = _MAX_FILL_S
                new_tat = base - <int64_t>floor(seconds * 1e9)
                if new_tat < now_ns:
                    new_tat = now_ns  # full: a bucket holds at most its burst
            if new_tat == tat or aigw_cas_i64(&region.tat_ns, &tat, new_tat):
                return

    def available(self, object now=None):
        """The tokens in the bucket at ``now``."""
        cdef BucketRegion* region = self._live()
        cdef int64_t now_ns = _now_ns(now)
        cdef double rate = aigw_load_f64(&region.rate_per_s)
        cdef double burst = aigw_load_f64(&region.burst)
        cdef int64_t deficit_ns = aigw_load_i64(&region.tat_ns) - now_ns
        cdef double level = burst - <double>deficit_ns * rate / 1e9 if deficit_ns > 0 else burst
        return level if level > 0.0 else 0.0

    def set_rate(self, double rate_per_s, double burst, object now=None):
        """Change rate and burst, keeping the tokens available (capped at ``burst``)."""
        cdef BucketRegion* region = self._live()
        cdef int64_t now_ns, tat, deficit_ns
        cdef double old_rate, old_burst, level
        _check_rate(rate_per_s, burst)
        now_ns = _now_ns(now)
        old_rate = aigw_load_f64(&region.rate_per_s)
        old_burst = aigw_load_f64(&region.burst)
        aigw_store_f64(&region.burst, burst)
        aigw_store_f64(&region.rate_per_s, rate_per_s)
        tat = aigw_load_i64(&region.tat_ns)
        while True:
            deficit_ns = tat - now_ns
            level = old_burst - <double>deficit_ns * old_rate / 1e9 if deficit_ns > 0 else old_burst
            if level > burst:
                level = burst
            elif level < 0.0:
                level = 0.0
            if aigw_cas_i64(
                &region.tat_ns, &tat, now_ns + <int64_t>ceil((burst - level) * 1e9 / rate_per_s)
            ):
                return

    def close(self):
        """Let go of the buffer (so that a shared-memory mapping can be closed)."""
        self._region = NULL
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)

    def __repr__(self):
        if self._region == NULL:
            return "<TokenBucket (closed)>"
        return f"<TokenBucket rate_per_s={self.rate_per_s:g} burst={self.burst:g}>"
