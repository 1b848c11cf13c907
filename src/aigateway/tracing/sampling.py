"""The sampler's decision for a request, made without the SDK when the sampler is a standard one.

At 10% sampling, nine requests in ten are not sampled; for them the SDK's ``start_span``
(its context lookups, the sampler's ``SamplingResult``, a ``NonRecordingSpan``) is work
for nothing.  ``QuickSampler`` makes the same decision from the configured sampler's own
figures (``always_on``, ``always_off``, ``traceidratio`` and their ``parentbased_``
forms): a new trace id, sampled when its low 64 bits are under the ratio's bound, exactly
the SDK's ``TraceIdRatioBased`` rule.  A sampled request then starts its span through the
SDK with that same trace id (``PresetTraceIds``), so the SDK's own sampler agrees.

A request carrying a W3C ``traceparent`` whose flags say "not sampled" is decided here too
(``parentbased_*`` drop such a request, and the log line keeps the client's trace id).
Anything else (a sampled parent, another propagator's headers, a header we do not read
exactly as the SDK would, a sampler of the user's own) is left to the SDK: ``decide``
answers None.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Final

from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

__all__ = ("PresetTraceIds", "QuickSampler")

_LOW_64: Final = (1 << 64) - 1
_ALWAYS: Final = 1 << 64  # every trace id's low 64 bits are under it
# Headers of the default propagators that never change the sampling decision.
_NEUTRAL: Final = frozenset({b"tracestate", b"baggage"})
# Version 00 exactly as the W3C spec writes it; anything else goes to the SDK's parser.
_TRACEPARENT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_SPAN: Final = b"0" * 16


class PresetTraceIds(RandomIdGenerator):
    """The SDK's random ids, but the next trace id is ours when one is preset (only the
    event loop's thread starts spans, so no lock)."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_trace_id(self) -> int:
        preset, self.next_trace_id = self.next_trace_id, 0
        return preset or super().generate_trace_id()


class QuickSampler:
    """The decision of a standard sampler, for a request's headers."""

    __slots__ = ("_bound", "_fields", "_parent_unsampled_drops")

    def __init__(self, bound: int, parent_unsampled_drops: bool, fields: frozenset[bytes]):
        self._bound = bound  # sampled when the trace id's low 64 bits are under it
        self._parent_unsampled_drops = parent_unsampled_drops
        self._fields = fields  # the headers the configured propagators read (lower case)

    @classmethod
    def of(cls, sampler: sampling.Sampler, fields: frozenset[bytes]) -> QuickSampler | None:
        """The quick form of ``sampler``, or None when only the SDK can decide for it."""
        drops = False
        root = sampler
        if isinstance(sampler, sampling.ParentBased):
            if type(sampler).should_sample is not sampling.ParentBased.should_sample:
                return None
            root = sampler._root
            drops = _bound_of(sampler._remote_parent_not_sampled) == 0
        bound = _bound_of(root)
        return None if bound is None else cls(bound, drops, fields)

    def decide(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[int, bool] | None:
        """(trace id, sampled) for a request with these headers; None: ask the SDK.

        Sampled is only ever answered for a new trace (no parent)."""
        fields, traceparent = self._fields, None
        for key, value in headers:
            if key in fields:
                if key == b"traceparent" and traceparent is None:
                    traceparent = value
                elif key not in _NEUTRAL:
                    return None  # another propagator's header, or traceparent twice
        if traceparent is None:
            trace_id = random.getrandbits(128) or 1
            return trace_id, trace_id & _LOW_64 < self._bound
        if not self._parent_unsampled_drops:
            return None
        parsed = _TRACEPARENT.fullmatch(traceparent.strip(b" \t"))
        if parsed is None or int(parsed[3], 16) & 1 or parsed[2] == _ZERO_SPAN:
            return None  # a sampled parent (the SDK starts the span), or not one we read
        trace_id = int(parsed[1], 16)
        return (trace_id, False) if trace_id else None


def _bound_of(sampler: sampling.Sampler) -> int | None:
    """The bound of the trace ids a root sampler samples, or None when it is not standard."""
    kind = type(sampler)
    if kind.should_sample is sampling.StaticSampler.should_sample:
        decision = sampler._decision  # type: ignore[attr-defined]
        if decision is sampling.Decision.RECORD_AND_SAMPLE:
            return _ALWAYS
        return 0 if decision is sampling.Decision.DROP else None  # RECORD_ONLY: the SDK's
    if kind.should_sample is sampling.TraceIdRatioBased.should_sample:
        return int(sampler.bound)  # type: ignore[attr-defined]
    return None
