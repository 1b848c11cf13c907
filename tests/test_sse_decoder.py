"""SSEDecoder: turns upstream Server-Sent-Events byte chunks into event data payloads.

Every behaviour test runs against both twins (``hotpath_impl``); the differential tests at
the end check on random streams that both twins agree with each other, with themselves
whatever the chunking, and with a naive line-by-line reference decoder.
"""

from __future__ import annotations

import itertools
import re
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aigateway import hotpath


def decode(impl: types.ModuleType, *chunks: bytes) -> list[bytes]:
    """Feed ``chunks`` to a new decoder, then flush it; return every payload."""
    decoder = impl.SSEDecoder()
    events: list[bytes] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.flush()


OPENAI_STREAM = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_EVENTS = [
    b'{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hello"}}]}',
    b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    b"[DONE]",
]


# --- the common case ------------------------------------------------------------------


def test_openai_stream_in_one_chunk_gives_every_payload_in_order(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(OPENAI_STREAM) == OPENAI_EVENTS
    assert decoder.flush() == []


def test_done_sentinel_is_passed_through_as_a_payload(hotpath_impl):
    assert decode(hotpath_impl, b"data: [DONE]\n\n") == [b"[DONE]"]


def test_an_event_comes_out_of_the_chunk_that_completes_it(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b'data: {"a":') == []
    assert decoder.feed(b"1}\n") == []
    assert decoder.feed(b'\ndata: {"b":2}\n\ndata: {"c"') == [b'{"a":1}', b'{"b":2}']
    assert decoder.feed(b":3}\n\n") == [b'{"c":3}']


def test_stream_split_at_every_byte_position(hotpath_impl):
    for i in range(len(OPENAI_STREAM) + 1):
        assert decode(hotpath_impl, OPENAI_STREAM[:i], OPENAI_STREAM[i:]) == OPENAI_EVENTS


def test_stream_fed_one_byte_at_a_time(hotpath_impl):
    chunks = [OPENAI_STREAM[i : i + 1] for i in range(len(OPENAI_STREAM))]
    assert decode(hotpath_impl, *chunks) == OPENAI_EVENTS


def test_payloads_are_bytes_even_for_bytes_like_chunks(hotpath_impl):
    events = decode(hotpath_impl, bytearray(b"data: a\n\ndata: "), memoryview(b"b\n\n"))
    assert events == [b"a", b"b"]
    assert all(type(event) is bytes for event in events)


def test_empty_chunks_change_nothing(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []  # still the LF of "\r\n", not a blank line
    assert decoder.feed(b"\n") == [b"a"]


def test_decoders_are_independent(hotpath_impl):
    first, second = hotpath_impl.SSEDecoder(), hotpath_impl.SSEDecoder()
    assert first.feed(b"data: one") == []
    assert second.feed(b"data: two\n\n") == [b"two"]
    assert first.feed(b"\n\n") == [b"one"]


# --- line endings ---------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_frames_events(hotpath_impl, eol):
    stream = b"event: message" + eol + b"data: a" + eol + b"data: b" + eol + eol
    stream += b"data: c" + eol + eol
    assert decode(hotpath_impl, stream) == [b"a\nb", b"c"]
    for i in range(len(stream) + 1):
        assert decode(hotpath_impl, stream[:i], stream[i:]) == [b"a\nb", b"c"]


def test_line_endings_may_be_mixed(hotpath_impl):
    assert decode(hotpath_impl, b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r") == [
        b"a\nb\nc",
        b"d",
    ]


def test_cr_ending_a_chunk_then_lf_starting_the_next_is_one_line_end(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [b"a\nb"]
    assert decoder.feed(b"\n") == []


def test_cr_ending_a_chunk_then_cr_is_a_blank_line(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [b"a"]
    assert decoder.feed(b"\n") == []  # belongs to the second CR; no event to end anyway


def test_lf_after_a_chunk_ending_with_cr_is_only_skipped_once(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [b"a"]


# --- fields ---------------------------------------------------------------------------


def test_anthropic_event_fields_are_ignored(hotpath_impl):
    stream = (
        b"event: message_start\n"
        b'data: {"type":"message_start"}\n\n'
        b"event: ping\n"
        b'data: {"type": "ping"}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","delta":{"text":"Hi"}}\n\n'
    )
    assert decode(hotpath_impl, stream) == [
        b'{"type":"message_start"}',
        b'{"type": "ping"}',
        b'{"type":"content_block_delta","delta":{"text":"Hi"}}',
    ]


def test_comments_id_and_retry_are_ignored(hotpath_impl):
    stream = b": keep-alive\n\nid: 7\nretry: 3000\n: in the middle\ndata: x\n\n:\n\n"
    assert decode(hotpath_impl, stream) == [b"x"]


def test_an_event_without_data_lines_yields_nothing(hotpath_impl):
    assert decode(hotpath_impl, b"event: ping\n\nid: 1\n\n\n\n\n") == []


def test_data_lines_of_one_event_are_joined_with_lf(hotpath_impl):
    assert decode(hotpath_impl, b"data: first\ndata:second\ndata\ndata: fourth\n\n") == [
        b"first\nsecond\n\nfourth"
    ]


def test_exactly_one_leading_space_is_removed_from_values(hotpath_impl):
    stream = b"data:no space\n\ndata:  two spaces \n\ndata:\tkept tab\n\n"
    assert decode(hotpath_impl, stream) == [b"no space", b" two spaces ", b"\tkept tab"]


def test_only_the_first_colon_separates_field_and_value(hotpath_impl):
    assert decode(hotpath_impl, b"data: a: b:c\n\n") == [b"a: b:c"]


def test_empty_data_yields_an_empty_payload(hotpath_impl):
    assert decode(hotpath_impl, b"data:\n\ndata: \n\ndata\n\n") == [b"", b"", b""]
    assert decode(hotpath_impl, b"data\ndata\n\n") == [b"\n"]


def test_field_names_must_match_exactly(hotpath_impl):
    stream = b"dataX: 1\n\nData: 2\n\ndata : 3\n\n dat: 4\n\ndat\n\n"
    assert decode(hotpath_impl, stream) == []


# --- end of stream --------------------------------------------------------------------


def test_flush_returns_an_event_missing_its_blank_line(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\ndata: c\n") == [b"a"]
    assert decoder.flush() == [b"b\nc"]


def test_flush_counts_an_unterminated_last_line(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\ndata: b") == []
    assert decoder.flush() == [b"a\nb"]


def test_flush_of_a_complete_stream_returns_nothing(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.flush() == []
    assert decoder.feed(b"data: a\n\n: bye\nevent: end") == [b"a"]
    assert decoder.flush() == []


def test_flush_resets_the_decoder(hotpath_impl):
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.flush() == [b"a"]
    assert decoder.flush() == []
    assert decoder.feed(b"\ndata: b\n\n") == [b"b"]
    assert decoder.feed(b"data: c") == []
    assert decoder.flush() == [b"c"]
    assert decoder.feed(b"\n") == []


# --- efficiency -----------------------------------------------------------------------


def test_long_event_in_small_chunks_takes_linear_time(hotpath_impl):
    # 4 MiB in 256-byte chunks: re-copying the pending bytes on each chunk would copy
    # ~34 GB (tens of seconds); a linear decoder needs a few milliseconds.
    payload = b"x" * (4 << 20)
    stream = b"data: " + payload + b"\n\n"
    decoder = hotpath_impl.SSEDecoder()
    events: list[bytes] = []
    started = time.perf_counter()
    for i in range(0, len(stream), 256):
        events += decoder.feed(stream[i : i + 256])
    elapsed = time.perf_counter() - started
    assert events == [payload]
    assert elapsed < 2.0


def test_many_events_of_many_lines(hotpath_impl):
    stream = b"".join(b"data: %d\ndata: %d\n\n" % (i, -i) for i in range(5000))
    expected = [b"%d\n%d" % (i, -i) for i in range(5000)]
    assert decode(hotpath_impl, *[stream[i : i + 1000] for i in range(0, len(stream), 1000)]) == (
        expected
    )


# --- the selector ---------------------------------------------------------------------


def test_package_exports_the_selected_twin():
    selected = hotpath.IMPLEMENTATION
    assert selected == ("python" if hotpath.NO_EXTENSIONS else "cython")
    assert hotpath.SSEDecoder is hotpath.load(selected).SSEDecoder


def test_twins_define_the_same_names(hotpath_impl):
    pure = hotpath.load("python")
    names = {name for name in vars(pure) if not name.startswith("__")}
    assert {name for name in vars(hotpath_impl) if not name.startswith("__")} == names
    assert names <= set(hotpath.__all__)
    assert hotpath_impl.IMPLEMENTATION in ("python", "cython")


def test_load_rejects_unknown_implementations():
    with pytest.raises(ValueError, match="unknown implementation"):
        hotpath.load("rust")


# --- differential tests ---------------------------------------------------------------

_LINE_BREAKS = re.compile(rb"\r\n|\r|\n")


def reference_decode(stream: bytes) -> list[bytes]:
    """Naive decoder of a whole stream, written from the spec independently of the twins."""
    events: list[bytes] = []
    data: list[bytes] = []
    *lines, last = _LINE_BREAKS.split(stream)
    for line in [*lines, last, b""] if last else [*lines, b""]:
        if not line:
            if data:
                events.append(b"\n".join(data))
            data = []
            continue
        if line.startswith(b"{"):
            data.append(line)  # the one deviation: a bare JSON line is data
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value.removeprefix(b" "))
    return events


_TEXT = st.binary(max_size=12).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))
_LINES = st.one_of(
    st.just(b""),  # a blank line: ends the event
    st.just(b""),
    _TEXT.map(lambda value: b"data:" + value),
    _TEXT.map(lambda value: b"data: " + value),
    st.sampled_from([b"data", b"data:", b"data: ", b"data:  "]),
    _TEXT.map(lambda value: b":" + value),
    st.tuples(
        st.sampled_from([b"event", b"id", b"retry", b"dat", b"dataa", b"Data", b""]), _TEXT
    ).map(lambda field_value: field_value[0] + b":" + field_value[1]),
    _TEXT,
)
_EOLS = st.sampled_from([b"\n", b"\r\n", b"\r"])
# A stream: lines of the SSE grammar, each with some line ending, maybe an unterminated tail.
_GRAMMAR_STREAMS = st.builds(
    lambda lines, tail: b"".join(line + eol for line, eol in lines) + tail,
    st.lists(st.tuples(_LINES, _EOLS), max_size=40),
    st.one_of(st.just(b""), _LINES),
)
# Byte soup from the pieces the decoder looks at, to reach odd corners of the grammar.
_SOUP_STREAMS = st.lists(
    st.sampled_from([b"data", b"d", b"a", b"ta", b":", b" ", b"\r", b"\n", b"\r\n", b"x", b"\xff"]),
    max_size=80,
).map(b"".join)


def _chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, database=None)
@given(
    stream=st.one_of(_GRAMMAR_STREAMS, _SOUP_STREAMS),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_twins_agree_with_each_other_and_with_any_chunking(hotpath_impl, stream, cuts):
    whole = decode(hotpath.load("python"), stream)
    assert whole == reference_decode(stream)
    assert decode(hotpath_impl, stream) == whole
    assert decode(hotpath_impl, *_chunked(stream, cuts)) == whole


def test_a_bare_json_line_is_data_for_geminis_in_stream_errors(
    hotpath_impl: types.ModuleType,
) -> None:
    stream = (
        b'data: {"candidates": []}\r\n\r\n'
        b'{"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}\n'
    )
    decoder = hotpath_impl.SSEDecoder()
    assert decoder.feed(stream) == [b'{"candidates": []}']
    assert decoder.flush() == [
        b'{"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}'
    ]
