"""``POST /v1/batch``: many chat requests in one call, each through the whole pipeline.

Body: ``{"requests": [...]}`` with up to ``MAX_BATCH_ITEMS`` items, each a native or an
OpenAI-format chat request (an item with any field the native API does not know is
read as OpenAI's format). Every item goes through the same pipeline (cache,
de-duplication, priority, rate limits, failover) concurrently. The answer lists the
results in the same order: ``{"index", "status": 200, "response"}`` with the native
answer (or OpenAI's completion for an OpenAI-format item), or ``{"index", "status",
"error"}`` in OpenAI's error shape. One bad item never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from aigateway.api.builder import NO_NATIVE
from aigateway.api.http import json_response, observer_of, read_body
from aigateway.api.native import NATIVE_KEYS, native_answer, parse_native_body
from aigateway.api.routes import PipelineRoutes
from aigateway.api.validation import check_depth, parse_chat_request, parse_json_object
from aigateway.errors import GatewayError, InvalidRequest
from aigateway.wire import Completed

MAX_BATCH_ITEMS = 100

logger = logging.getLogger("aigateway")


class BatchRoutes(PipelineRoutes):
    async def batch(self, request: Request) -> Response:
        started = time.perf_counter()
        raw = await read_body(request, self.max_body_bytes)
        body = parse_json_object(raw, check_nesting=False)  # each item is checked alone
        items = body.get("requests")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
            raise InvalidRequest(
                f"invalid field 'requests': expected a list of 1 to {MAX_BATCH_ITEMS} chat "
                "requests",
                param="requests",
            )
        self.builder.check_headers(request)  # a bad header fails the batch, not each item
        results = await asyncio.gather(
            *(self._one(request, i, item, started) for i, item in enumerate(items))
        )
        return json_response({"object": "batch", "results": results})

    async def _one(self, request: Request, index: int, item: Any, started: float) -> dict[str, Any]:
        pipeline = self._pipeline()
        try:
            if not isinstance(item, dict):
                raise InvalidRequest("expected a chat request object", param="")
            native = set(item) <= NATIVE_KEYS
            if native:
                parsed, controls = parse_native_body(item)
            else:
                check_depth(item)  # before re-encoding it
                parsed, controls = parse_chat_request(orjson.dumps(item)), NO_NATIVE
            if parsed.stream:
                raise InvalidRequest("streaming is not available inside a batch", param="stream")
            # Every item notes its provider calls in the batch request's one record.
            chat = self.builder.build(request, parsed, controls)
            result = await pipeline.chat(chat, observer_of(request))
            assert isinstance(result, Completed)
            response = native_answer(result, started) if native else orjson.loads(result.body)
        except GatewayError as exc:
            return _failed(index, exc)
        except Exception:  # a fault of ours fails this item only, as the docs promise
            logger.exception("unexpected error in item %d of a batch", index)
            return _failed(index, GatewayError("internal gateway error", code="internal_error"))
        return {"index": index, "status": 200, "provider": result.provider, "response": response}


def _failed(index: int, exc: GatewayError) -> dict[str, Any]:
    error = exc.body()["error"]
    param = error.get("param")
    error["param"] = f"requests[{index}]" + (f".{param}" if param else "")
    return {"index": index, "status": exc.status, "error": error}
