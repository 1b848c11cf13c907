"""A provider's tokens-per-minute limit (``<PROVIDER>_TPM``): estimate, reserve, settle.

Tokens are counted from what the provider reports (``usage``: prompt + completion), which
is known only after the call. So admission reserves an **estimate** before the call, from
the provider's token bucket in the node's shared memory (rate ``TPM / 60`` a second,
burst ``BURST_MINUTES`` of the limit, that is one minute's tokens), and the pipeline
**settles** it afterwards (``Reservation``):

* the answer's usage known: the difference is taken (a debt later calls wait out) or
  given back;
* the call failed before the provider could have counted anything (it refused it, could
  not be reached, a 429 or 5xx answer): the reservation is given back in full;
* no usage to settle by (a call that timed out or whose client left while the provider
  may have been generating, a stream without its usage chunk): the estimate stands.

**The estimate** (``estimate``): the prompt's characters / 4 (``CHARS_PER_TOKEN``: the
text of every message, or of every embedding input), plus the request's
``max_completion_tokens`` / ``max_tokens``, or ``DEFAULT_OUTPUT_TOKENS`` when it sets
none; at most the burst. A request whose prompt estimate plus its own ``max_tokens`` is
more than the burst can never fit in the limit: it is refused at once with 400
``tokens_exceed_limit`` (no wait would help; as the provider's side, so a fallback target
may still take it).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from aigateway.core.streaming import carries_usage
from aigateway.errors import Fault, InvalidRequest
from aigateway.hotpath import TokenBucket
from aigateway.providers._openai_format import load_any
from aigateway.wire import ApiRequest, close_events, token_counts, usage_of

__all__ = (
    "BURST_MINUTES",
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "NO_RESERVATION",
    "Estimate",
    "Reservation",
    "estimate",
    "stream_usage",
    "token_bucket_name",
    "token_bucket_spec",
    "too_large",
)

CHARS_PER_TOKEN: Final = 4
DEFAULT_OUTPUT_TOKENS: Final = 256  # the output allowed for when a request sets no max
BURST_MINUTES: Final = 1.0  # the bucket's burst, in minutes of the limit
OFF_SPEC: Final = (1.0, 1.0)  # the bucket of a provider without a TPM (unused until set)


def token_bucket_name(provider: str) -> str:
    return f"tpm:{provider}"


def token_bucket_spec(tpm: float) -> tuple[float, float]:
    """(rate per second, burst) of a provider's token bucket for ``tpm`` (0: no limit)."""
    if tpm <= 0.0:
        return OFF_SPEC
    return tpm / 60.0, tpm * BURST_MINUTES


@dataclass(frozen=True, slots=True)
class Estimate:
    """A request's tokens before the call: its prompt, and the output it allows for
    (``explicit``: the request's own maximum, else the default)."""

    prompt: int
    output: int
    explicit: bool

    def need(self, burst: float) -> int:
        """The tokens to reserve: the estimate, at most the burst."""
        return max(min(self.prompt + self.output, math.floor(burst)), 1)


def estimate(request: ApiRequest) -> Estimate:
    body = request.body
    if request.operation == "embeddings":
        return Estimate(_chars_to_tokens(_text_chars(body.get("input"))), 0, False)
    if request.operation == "responses":  # its instructions and input items
        chars = _text_chars([body.get("instructions"), body.get("input")])
        limit = body.get("max_output_tokens")
    else:
        chars = _text_chars(body.get("messages"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return Estimate(_chars_to_tokens(chars), limit, True)
    return Estimate(_chars_to_tokens(chars), DEFAULT_OUTPUT_TOKENS, False)


def too_large(provider: str, tokens: Estimate, tpm: float, burst: float) -> InvalidRequest:
    asked = tokens.prompt + (tokens.output if tokens.explicit else 0)
    return InvalidRequest(
        f"this request needs about {asked} tokens (prompt characters / {CHARS_PER_TOKEN}"
        + (" plus max_tokens" if tokens.explicit else "")
        + f"), more than {provider}'s limit of {tpm:g} tokens per minute allows at once "
        f"({math.floor(burst)}): shorten it or lower max_tokens",
        param="max_tokens" if tokens.explicit else "messages",
        code="tokens_exceed_limit",
        fault=Fault.RATE_LIMITED,  # the next target of a fallback chain may take it
    )


def _chars_to_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _text_chars(value: Any) -> int:
    """The characters of text in a prompt: strings, and the ``text``/``content`` of the
    messages and parts holding them (images and other media are not counted)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return _text_chars(value.get("content")) + _text_chars(value.get("text"))
    return 0


class Reservation:
    """Tokens reserved for one provider call, settled once when it ended (see module)."""

    __slots__ = ("_bucket", "_used", "tokens")

    def __init__(
        self, bucket: TokenBucket | None, tokens: int, used: Callable[[int], None]
    ) -> None:
        self._bucket = bucket
        self.tokens = tokens
        self._used = used  # counts the tokens the provider reported

    @property
    def metering(self) -> bool:
        """Whether the answer's usage must be read to settle it (a stream: metered)."""
        return self.tokens > 0

    def settle(self, used: int) -> None:
        """The provider reported ``used`` tokens: take the difference, or give it back."""
        bucket, self._bucket = self._bucket, None
        if bucket is not None:
            if used != self.tokens:
                bucket.settle(float(used - self.tokens))
            self._used(used)

    def settle_usage(self, usage: Any) -> None:
        """Settle by an OpenAI ``usage`` object; none there: the estimate stands."""
        if self._bucket is not None and isinstance(usage, dict):
            self.settle(sum(token_counts(usage)))

    def failed(self, fault: Fault) -> None:
        """The call failed: give the tokens back unless the provider may have counted them
        (it timed out while it may have been generating)."""
        if fault not in (Fault.TIMEOUT, Fault.DEADLINE):
            bucket, self._bucket = self._bucket, None
            if bucket is not None:
                bucket.settle(-float(self.tokens))

    async def metered(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A stream's events, settled by the usage chunk when the stream ends."""
        usage: Any = None
        try:
            async for piece in events:
                if carries_usage(piece):
                    usage = stream_usage(piece) or usage
                yield piece
        finally:
            await close_events(events)
            self.settle_usage(usage)


def stream_usage(piece: bytes) -> Any:
    """The usage a piece of a stream (one or more SSE events) carries, if any."""
    for event in piece.split(b"\n\n"):
        if event.startswith(b"data: {") and carries_usage(event):
            chunk = load_any(event[6:])
            if isinstance(chunk, dict) and isinstance(usage_of(chunk), dict):
                return usage_of(chunk)
    return None


def _nothing(used: int) -> None:
    return None


#: What a call without a token limit holds: settling it does nothing.
NO_RESERVATION: Final = Reservation(None, 0, _nothing)
