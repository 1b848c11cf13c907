"""Incremental Server-Sent-Events decoder (pure-Python twin).

This module is the executable specification of ``ext/_sse_c.pyx``: both define the same
names with the same signatures and must give the same results for every input.

The decoder follows the WHATWG "event stream interpretation" rules, reduced to what a
relay needs, i.e. the ``data`` of each event:

* lines end with ``\\r\\n``, ``\\n`` or ``\\r``; a chunk boundary may fall anywhere,
  including between the ``\\r`` and the ``\\n`` of one ``\\r\\n``;
* a blank line ends ("dispatches") the current event;
* ``data:<value>`` appends ``<value>`` (one leading space removed, if present) to the
  event's data; a bare ``data`` line appends an empty value; the values of several data
  lines are joined with ``b"\\n"``;
* lines starting with ``:`` are comments; every other field (``event``, ``id``,
  ``retry``, unknown names) is ignored;
* an event without any data line yields nothing; ``data:`` alone yields ``b""``;
* one deviation: a line that starts with ``{`` is taken whole as a data line. Gemini
  reports an error inside a stream as a bare JSON line without ``data:``; the spec
  would drop it (as a field named ``{"error"``), and with it the provider's reason.

A leading byte-order mark is not stripped: upstream providers never send one.
"""

from __future__ import annotations

__all__ = ("SSEDecoder",)

_LF = 0x0A
_CR = 0x0D


class SSEDecoder:
    """Turn a stream of byte chunks into the data payloads of its events.

    ``feed`` each chunk as it arrives and collect the payloads of the events it completes;
    call ``flush`` once at the end of the stream for a last event that was never ended by
    a blank line.  Chunks may be ``bytes`` or any other bytes-like object; payloads are
    always ``bytes``.
    """

    __slots__ = ("_data", "_partial", "_skip_lf")

    def __init__(self) -> None:
        # Pieces of a line whose terminator has not arrived yet.  Kept as a list and joined
        # once, so a long line delivered in many small chunks costs linear time.
        self._partial: list[bytes] = []
        # Values of the data lines of the current event.
        self._data: list[bytes] = []
        # The previous chunk ended with b"\r": a b"\n" starting this one belongs to it.
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume ``chunk``; return the data payloads of the events it completes, in order."""
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if not chunk:
            return []

        # bytes.splitlines() splits on exactly the three SSE line terminators.  If the chunk
        # does not end with one, its last line is incomplete and is kept for later.
        lines = chunk.splitlines()
        last = chunk[-1]
        if last in b"\r\n":
            tail = b""
            self._skip_lf = last == _CR
        else:
            tail = lines.pop()
        partial = self._partial
        if partial and lines:
            partial.append(lines[0])
            lines[0] = b"".join(partial)
            partial.clear()
        if tail:
            partial.append(tail)

        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line == b"data":
                data.append(b"")
            elif line[:1] == b"{":
                data.append(line)  # a bare JSON line: Gemini's in-stream error
            # Anything else is a comment (":...") or a field the relay does not need.
        return events

    def flush(self) -> list[bytes]:
        """End of stream: return the payload of an event left without its blank line.

        An unterminated last line counts as a complete line.  The decoder is reset and can
        be used for a new stream.
        """
        # Ending the pending line (if any) and then the event is exactly a blank line, once
        # the "\n" after a final "\r" has been accounted for; feed() leaves the state clean.
        return self.feed(b"\n\n")
