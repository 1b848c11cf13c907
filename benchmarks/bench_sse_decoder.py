"""SSEDecoder throughput on a realistic OpenAI chat-completion stream, for each twin.

Run: ``pytest benchmarks/bench_sse_decoder.py --benchmark-only``.  Each benchmark is named
after its implementation (``[python]`` / ``[cython]``) and grouped with its counterpart.
"""

from __future__ import annotations

import json
import random
import types

N_EVENTS = 200


def _openai_stream(n_events: int) -> bytes:
    words = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "again"]
    events = []
    for i in range(n_events):
        chunk = {
            "id": "chatcmpl-9xQ2ZkYvWcE1bq3rT8uN5mLpA0sJd",
            "object": "chat.completion.chunk",
            "created": 1_732_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": " " + words[i % len(words)]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def _network_chunks(stream: bytes, seed: int = 0) -> list[bytes]:
    """Split like socket reads: 64 to 1460 bytes, so events often straddle two chunks."""
    rng = random.Random(seed)
    chunks, start = [], 0
    while start < len(stream):
        end = start + rng.randint(64, 1460)
        chunks.append(stream[start:end])
        start = end
    return chunks


def _event_chunks(stream: bytes) -> list[bytes]:
    """One event per chunk, as when the client keeps up with a provider flushing each event."""
    return [event + b"\n\n" for event in stream.split(b"\n\n")[:-1]]


STREAM = _openai_stream(N_EVENTS)
NETWORK_CHUNKS = _network_chunks(STREAM)
EVENT_CHUNKS = _event_chunks(STREAM)


def _decode_all(impl: types.ModuleType, chunks: list[bytes]) -> int:
    decoder = impl.SSEDecoder()
    n = 0
    for chunk in chunks:
        n += len(decoder.feed(chunk))
    return n + len(decoder.flush())


def test_sse_decoder_openai_network_chunks(benchmark, hotpath_impl):
    benchmark.group = f"sse-decoder: {N_EVENTS} OpenAI events, network-sized chunks"
    assert benchmark(_decode_all, hotpath_impl, NETWORK_CHUNKS) == N_EVENTS + 1


def test_sse_decoder_openai_event_per_chunk(benchmark, hotpath_impl):
    benchmark.group = f"sse-decoder: {N_EVENTS} OpenAI events, one per chunk"
    assert benchmark(_decode_all, hotpath_impl, EVENT_CHUNKS) == N_EVENTS + 1
