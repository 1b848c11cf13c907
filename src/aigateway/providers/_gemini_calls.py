"""Tool-call ids for Gemini's function calls, and the thought signatures kept behind them.

Gemini often leaves ``functionCall.id`` out, and Gemini 3 wants each call's opaque
``thoughtSignature`` back when the history returns (a 400 without it). Neither fits in an
OpenAI tool-call id, which OpenAI limits to 40 characters (a conversation started on Gemini
must be able to go on with ``gpt-*``, as a failing-over alias does). So:

* the id is ``call_`` + 24 hex digits (29 characters), a hash of the answer's ``responseId``,
  the candidate, the call's position, name and arguments: the same answer (a cache hit, a
  replayed stream) always gets the same ids, and two calls never share one;
* the signature, Gemini's own call id if it sent one, and the function's name are kept by the
  adapter under that id, bounded (:data:`MAX_SIGNATURES` entries, each for
  :data:`SIGNATURE_TTL_S`): in the node's LMDB store that every worker reads
  (``cache/signatures.py``), or in a map of the worker's own (:class:`ThoughtSignatures`)
  for an app run without a node directory.

When the history comes back, a kept signature goes back on its ``functionCall`` part. A call
whose signature is unknown (the history came from another model, another node served the
call, the entry expired or was pushed out) is sent to Gemini 3 with Google's documented
placeholder, :data:`PLACEHOLDER_SIGNATURE`, on the first call of that turn: Gemini accepts
it, and reasons without its earlier thoughts. Models before Gemini 3 need no signature.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import xxhash

__all__ = [
    "MAX_SIGNATURES",
    "PLACEHOLDER_SIGNATURE",
    "SIGNATURE_TTL_S",
    "CallIds",
    "Kept",
    "SignatureStore",
    "ThoughtSignatures",
    "needs_signatures",
]

PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"
SIGNATURE_TTL_S = 6 * 3600.0  # a conversation's tool loop is minutes; a long pause is hours
MAX_SIGNATURES = 20_000  # signatures are ~0.1-1 KB: at most ~20 MB per worker
_PREFIX = "call_"
_HEX = 24


def needs_signatures(model: str) -> bool:
    """Gemini 3 refuses a replayed function call without a signature."""
    return model.removeprefix("models/").startswith("gemini-3")


@dataclass(frozen=True, slots=True)
class Kept:
    name: str  # the function's: a tool message without its assistant turn still names it
    signature: str | None
    gemini_id: str | None


class SignatureStore(Protocol):
    """Where an adapter keeps signatures: a worker's map, or the node's store."""

    def keep(self, call_id: str, name: str, signature: Any, gemini_id: Any) -> None: ...

    def recall(self, call_id: Any) -> Kept | None: ...


class ThoughtSignatures:
    """Signatures (and Gemini's call ids) by OpenAI tool-call id: bounded, oldest out first,
    each entry for ``ttl_s`` seconds. One per adapter, i.e. per worker process."""

    __slots__ = ("_clock", "_entries", "_max_entries", "_ttl_s")

    def __init__(
        self,
        ttl_s: float = SIGNATURE_TTL_S,
        max_entries: int = MAX_SIGNATURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Kept]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, call_id: str, name: str, signature: Any, gemini_id: Any) -> None:
        kept = Kept(
            name,
            signature if isinstance(signature, str) and signature else None,
            gemini_id if isinstance(gemini_id, str) and gemini_id else None,
        )
        self._entries[call_id] = (self._clock() + self._ttl_s, kept)
        self._entries.move_to_end(call_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def recall(self, call_id: Any) -> Kept | None:
        if not isinstance(call_id, str):
            return None
        entry = self._entries.get(call_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[call_id]
            return None
        return entry[1]


class CallIds:
    """The ids of one Gemini answer's calls (a whole answer, or every event of a stream)."""

    __slots__ = ("_counts", "_seed", "_signatures")

    def __init__(self, response_id: Any, signatures: SignatureStore | None) -> None:
        seed = response_id if isinstance(response_id, str) and response_id else uuid.uuid4().hex
        self._seed = seed.encode()
        self._signatures = signatures
        self._counts: dict[int, int] = {}  # candidate index -> calls seen

    def new(self, candidate: int, name: str, args: Any, part: dict[str, Any]) -> str:
        position = self._counts.get(candidate, 0)
        self._counts[candidate] = position + 1
        seed = b"\x00".join(
            (self._seed, b"%d:%d" % (candidate, position), name.encode(), orjson.dumps(args))
        )
        call_id = _PREFIX + xxhash.xxh3_128_hexdigest(seed)[:_HEX]
        if self._signatures is not None:
            call = part.get("functionCall")
            gemini_id = call.get("id") if isinstance(call, dict) else None
            self._signatures.keep(call_id, name, part.get("thoughtSignature"), gemini_id)
        return call_id
