"""What tests see and steer in the mock provider: counters, recent requests, faults, and the
control API over them (``/_mock/stats``, ``/_mock/reset``, ``/_mock/faults``).

The control API never requires the API key and is never counted.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from aigateway.testing.mock_errors import error_payload
from aigateway.testing.mock_faults import FaultError, FaultQueue

__all__ = ["MAX_RECORDED_REQUESTS", "MockState", "control_routes"]

MAX_RECORDED_REQUESTS = 50
MAX_CALL_TIMES = 10_000
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
_JSON_HEADERS = {"Content-Type": "application/json"}
_OK_BODY = b'{"ok":true}'


class MockState:
    """Calls counted per path, the last requests (secrets masked), the fault queue."""

    __slots__ = ("by_path", "call_times", "calls", "faults", "recent", "streams")

    def __init__(self) -> None:
        self.calls = 0
        self.by_path: dict[str, int] = {}
        # When each call arrived (wall clock), for tests of the rate a provider sees.
        self.call_times: deque[float] = deque(maxlen=MAX_CALL_TIMES)
        self.recent: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.faults = FaultQueue()
        # Each stream's progress: events sent of how many, and how it ended (complete,
        # dropped by a fault, cut by the client, or still running).
        self.streams: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED_REQUESTS)

    def stream_started(self, path: str, total: int | None) -> dict[str, Any]:
        record: dict[str, Any] = {"path": path, "total": total, "sent": 0, "outcome": "running"}
        record["started"], record["ended"] = time.time(), None
        self.streams.append(record)
        return record

    def record(self, request: web.Request, body: Any) -> None:
        path = request.path
        self.calls += 1
        self.call_times.append(time.time())
        self.by_path[path] = self.by_path.get(path, 0) + 1
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            lower = name.lower()
            headers[lower] = "present" if lower in _SECRET_HEADERS else value
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.recent.append(
            {
                "path": path,
                "method": request.method,
                "headers": headers,
                "body": body,
                # the client's address:port tells tests whether a connection was reused
                "peer": f"{peer[0]}:{peer[1]}" if peer else None,
            }
        )


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def control_routes(state: MockState) -> list[web.RouteDef]:
    async def stats(request: web.Request) -> web.Response:
        return _json(
            orjson.dumps(
                {
                    "calls": state.calls,
                    "by_path": state.by_path,
                    "last_requests": list(state.recent),
                    "call_times": list(state.call_times),
                    "streams": list(state.streams),
                }
            )
        )

    async def reset(request: web.Request) -> web.Response:
        state.calls = 0
        state.call_times.clear()
        state.by_path.clear()
        state.recent.clear()
        state.streams.clear()
        state.faults.clear()
        return _json(_OK_BODY)

    async def set_faults(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            state.faults.configure(orjson.loads(raw or b"{}"))
        except orjson.JSONDecodeError as exc:
            return _json(orjson.dumps(error_payload(f"Invalid JSON: {exc}")), 400)
        except FaultError as exc:
            return _json(orjson.dumps(error_payload(str(exc))), 400)
        return _json(orjson.dumps({"ok": True, **state.faults.describe()}))

    async def get_faults(request: web.Request) -> web.Response:
        return _json(orjson.dumps(state.faults.describe()))

    return [
        web.get("/_mock/stats", stats, allow_head=False),
        web.post("/_mock/reset", reset),
        web.post("/_mock/faults", set_faults),
        web.get("/_mock/faults", get_faults, allow_head=False),
    ]
