"""Shared helpers of the adapter tests: the project's wire fixtures and request builders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from aigateway.providers.base import UpstreamCall
from aigateway.wire import ApiRequest

WIRE = Path(__file__).parent / "fixtures" / "wire"


def fixture(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


def http_fixture(name: str) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body) of a whole HTTP message."""
    head, _, body = fixture(name).partition(b"\n\n")
    status_line, *lines = head.decode().splitlines()
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def chat(body: dict[str, Any], stream: bool = False) -> ApiRequest:
    return ApiRequest("chat", str(body.get("model", "m")), body, orjson.dumps(body), stream)


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def sent(call: UpstreamCall) -> Any:
    assert call.body is not None
    return json.loads(call.body)
