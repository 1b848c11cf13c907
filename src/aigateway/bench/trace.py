"""A synthetic request trace, generated deterministically from a seed (no I/O here).

Prompts repeat with a Zipf distribution over a fixed pool (rank ``k`` is drawn with a
weight of ``1 / k**s``), so a few prompts come back very often and most rarely, as in
real traffic. Each request also draws a temperature (a mix of greedy and sampled), whether
it streams (``stream_fraction``), and one of four priorities, sent in the
``x-aigateway-priority`` header. The same seed always gives the same trace.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from aigateway.bench.bodies import chat_body

PRIORITIES = ("critical", "high", "normal", "low")
PRIORITY_WEIGHTS = (0.1, 0.2, 0.5, 0.2)
TEMPERATURES = (0.0, 0.0, 0.2, 0.7, 1.0)
# fmt: off
_WORDS = (
    "summarise", "translate", "explain", "classify", "rewrite", "list", "compare", "extract",
    "outline", "answer", "invoice", "contract", "ticket", "email", "report", "schedule",
    "product", "review", "incident", "recipe",
)
# fmt: on


@dataclass(frozen=True, slots=True)
class TraceSpec:
    seed: int = 8
    requests: int = 20_000
    prompts: int = 2_000
    zipf_s: float = 1.1
    stream_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.requests < 1 or self.prompts < 1:
            raise ValueError("a trace needs at least one request and one prompt")
        if self.zipf_s <= 0:
            raise ValueError("zipf_s must be > 0")
        if not 0.0 <= self.stream_fraction <= 1.0:
            raise ValueError("stream_fraction must be within 0..1")


@dataclass(frozen=True, slots=True)
class TraceRequest:
    index: int
    prompt: int  # rank in the Zipf pool: 0 is the most frequent
    temperature: float
    stream: bool
    priority: str

    def body(self) -> dict[str, Any]:
        return chat_body(prompt_text(self.prompt), temperature=self.temperature, stream=self.stream)

    def to_json(self) -> dict[str, Any]:
        return {
            "body": orjson.dumps(self.body()).decode(),
            "stream": self.stream,
            "priority": self.priority,
        }


def prompt_text(rank: int) -> str:
    """The text of pooled prompt ``rank``: stable, distinct, a few dozen words long."""
    rng = random.Random(rank * 7919 + 1)
    words = [rng.choice(_WORDS) for _ in range(8 + rank % 24)]
    return f"Trace prompt {rank}: " + " ".join(words)


def generate_trace(spec: TraceSpec) -> list[TraceRequest]:
    rng = random.Random(spec.seed)
    cum_weights = list(accumulate(1.0 / (k**spec.zipf_s) for k in range(1, spec.prompts + 1)))
    ranks = rng.choices(range(spec.prompts), cum_weights=cum_weights, k=spec.requests)
    priority_weights = list(accumulate(PRIORITY_WEIGHTS))
    trace = []
    for index, rank in enumerate(ranks):
        trace.append(
            TraceRequest(
                index=index,
                prompt=rank,
                temperature=rng.choice(TEMPERATURES),
                stream=rng.random() < spec.stream_fraction,
                priority=rng.choices(PRIORITIES, cum_weights=priority_weights)[0],
            )
        )
    return trace


def describe_trace(trace: list[TraceRequest]) -> dict[str, Any]:
    """Shape of a trace: how much of it repeats, streams, and each priority's share."""
    prompts = Counter(r.prompt for r in trace)
    total = len(trace)
    return {
        "requests": total,
        "distinct_prompts": len(prompts),
        "repeated_fraction": 1.0 - len(prompts) / total if total else 0.0,
        "top_prompt_share": prompts.most_common(1)[0][1] / total if total else 0.0,
        "stream_fraction": sum(r.stream for r in trace) / total if total else 0.0,
        "priorities": {p: sum(r.priority == p for r in trace) for p in PRIORITIES},
    }
