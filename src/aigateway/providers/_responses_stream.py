"""A chat completion stream written as Responses API events (no I/O).

Fed the ``data:`` payloads of the gateway's chat stream (whatever provider produced it),
it writes every lifecycle event OpenAI sends, each ``event: <type>`` + ``data: <json>``
with a gap-free ``sequence_number``::

    response.created, response.in_progress
    text:   response.output_item.added (message) -> response.content_part.added ->
            response.output_text.delta ... -> response.output_text.done ->
            response.content_part.done -> response.output_item.done
    call:   response.output_item.added (function_call) ->
            response.function_call_arguments.delta ... -> .done -> response.output_item.done
    end:    response.completed | response.incomplete (with usage), or, when the chat
            stream carries an error, ``error`` then response.failed

A message item is closed when the first tool call starts (chat streams say their text
first); tool calls stay open until the end, since a provider may interleave them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from aigateway.providers._responses_answer import (
    INCOMPLETE,
    ResponseShell,
    call_item,
    message_item,
    new_id,
    output_text,
    response_usage,
)

JsonObject = dict[str, Any]


@dataclass(slots=True)
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    done: bool = False


class ResponsesEvents:
    """One response's events; ``final`` is the Response once the stream ended well."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.final: JsonObject | None = None
        self._sequence = 0
        self._output: list[JsonObject | _Call] = []  # finished items, open calls
        self._message_id: str | None = None  # the open message item
        self._message_index = 0
        self._text: list[str] = []
        self._logprobs: list[Any] = []
        self._refusal: list[str] = []
        self._calls: dict[int, _Call] = {}
        self._finish: str | None = None
        self._usage: Any = None
        self._ended = False

    def start(self) -> bytes:
        created = self.shell.response("in_progress", [])
        return self._event("response.created", response=created) + self._event(
            "response.in_progress", response=created
        )

    def feed(self, data: bytes) -> bytes:
        """The events for one chat payload (a chunk, an error, or ``[DONE]``)."""
        if self._ended:
            return b""
        if data == b"[DONE]":
            return self.end()
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):
            return self.fail(chunk["error"])
        if chunk.get("usage") is not None:
            self._usage = chunk["usage"]
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.shell.model = chunk["model"]
        out = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has one generation per response
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out.append(self._delta(delta, choice.get("logprobs")))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def end(self) -> bytes:
        """Close every open item and send the terminal event (stream over, no error)."""
        if self._ended:
            return b""
        out = [self._close_message()]
        for call in self._calls.values():
            out.append(self._close_call(call))
        self._ended = True
        incomplete = INCOMPLETE.get(self._finish or "")
        status = "incomplete" if incomplete else "completed"
        output = [item for item in self._output if isinstance(item, dict)]
        self.final = self.shell.response(
            status, output, response_usage(self._usage), incomplete=incomplete
        )
        name = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(name, response=self.final))
        return b"".join(out)

    def fail(self, error: JsonObject) -> bytes:
        """An error after the 200: OpenAI's ``error`` event, then ``response.failed``."""
        if self._ended:
            return b""
        self._ended = True
        code = error.get("code") or error.get("type") or "server_error"
        message = str(error.get("message") or "the provider failed")
        head = self._event("error", code=code, message=message, param=error.get("param"))
        output = [item for item in self._output if isinstance(item, dict)]
        failed = self.shell.response("failed", output, error={"code": code, "message": message})
        return head + self._event("response.failed", response=failed)

    # -- deltas ---------------------------------------------------------------------------

    def _delta(self, delta: JsonObject, logprobs: Any) -> bytes:
        out = []
        text = delta.get("content")
        refusal = delta.get("refusal")
        if (isinstance(text, str) and text) or (isinstance(refusal, str) and refusal):
            out.append(self._open_message())
            if isinstance(text, str) and text:
                self._text.append(text)
                content = logprobs.get("content") if isinstance(logprobs, dict) else None
                content = content if isinstance(content, list) else []
                self._logprobs.extend(content)
                out.append(self._event(
                    "response.output_text.delta", item_id=self._message_id,
                    output_index=self._message_index, content_index=0, delta=text,
                    logprobs=content,
                ))  # fmt: skip
            if isinstance(refusal, str) and refusal:
                self._refusal.append(refusal)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out.append(self._call_delta(call))
        return b"".join(out)

    def _open_message(self) -> bytes:
        if self._message_id is not None:
            return b""
        self._message_id = new_id("msg_")
        self._message_index = len(self._output)
        self._output.append(_Call(-1, "", "", ""))  # its place, filled when it closes
        item = message_item(self._message_id, "", "in_progress")
        item["content"] = []
        return self._event(
            "response.output_item.added", output_index=self._message_index, item=item
        ) + self._event(
            "response.content_part.added", item_id=self._message_id,
            output_index=self._message_index, content_index=0, part=output_text(""),
        )  # fmt: skip

    def _close_message(self) -> bytes:
        if self._message_id is None:
            return b""
        item_id, index = self._message_id, self._message_index
        self._message_id = None
        text = "".join(self._text)
        incomplete = self._finish in INCOMPLETE
        status = "incomplete" if incomplete else "completed"
        refusal = "".join(self._refusal) or None
        item = message_item(item_id, text, status, self._logprobs, refusal)
        self._output[index] = item
        part = output_text(text, self._logprobs)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        return b"".join((
            self._event("response.output_text.done", **where, text=text, logprobs=self._logprobs),
            self._event("response.content_part.done", **where, part=part),
            self._event("response.output_item.done", output_index=index, item=item),
        ))  # fmt: skip

    def _call_delta(self, delta: JsonObject) -> bytes:
        index = delta.get("index", 0)
        function = delta.get("function") if isinstance(delta.get("function"), dict) else {}
        assert isinstance(function, dict)
        fragment = function.get("arguments")
        call = self._calls.get(index) if isinstance(index, int) else None
        out = []
        if call is None:
            out.append(self._close_message())  # the text before the calls is complete
            call = _Call(
                len(self._output), new_id("fc_"), str(delta.get("id") or new_id("call_")),
                str(function.get("name") or ""),
            )  # fmt: skip
            self._calls[index if isinstance(index, int) else len(self._calls)] = call
            self._output.append(call)
            item = call_item(call.item_id, call.call_id, call.name, "", "in_progress")
            out.append(
                self._event("response.output_item.added", output_index=call.output_index,
                            item=item)
            )  # fmt: skip
        elif not call.name and isinstance(function.get("name"), str):
            call.name = function["name"]
        if isinstance(fragment, str) and fragment:
            call.arguments.append(fragment)
            out.append(self._event(
                "response.function_call_arguments.delta", item_id=call.item_id,
                output_index=call.output_index, delta=fragment,
            ))  # fmt: skip
        return b"".join(out)

    def _close_call(self, call: _Call) -> bytes:
        if call.done:
            return b""
        call.done = True
        arguments = "".join(call.arguments)
        item = call_item(call.item_id, call.call_id, call.name, arguments, "completed")
        self._output[call.output_index] = item
        return self._event(
            "response.function_call_arguments.done",
            item_id=call.item_id,
            name=call.name,
            output_index=call.output_index,
            arguments=arguments,
        ) + self._event("response.output_item.done", output_index=call.output_index, item=item)

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def payloads(framed: bytes) -> list[bytes]:
    """The ``data`` of each event ``ResponsesEvents`` wrote (one JSON line each)."""
    return [line[6:] for line in framed.split(b"\n") if line.startswith(b"data: ")]
