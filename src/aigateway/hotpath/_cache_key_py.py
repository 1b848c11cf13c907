"""Response-cache keys (pure-Python twin).

This module is the executable specification of ``ext/_cache_key_c.pyx``: both define the
same names with the same signatures and must give the same key for every input.

``cache_key(request, scope, provider=..., model=...)`` is the 16-byte XXH3-128 digest of
a canonical byte encoding of what decides the answer to an OpenAI-format chat body: the
scope (a namespace: two scopes never share keys), the resolved provider and model (the
keyword arguments; ``model=None`` takes the body's ``model``) and every field of the body
except those in ``EXCLUDED_FIELDS`` (``stream``, ``user``, ``metadata``, cache controls...),
which do not change the answer.  Inside ``messages``, each message and each content part,
and each entry of ``tools`` and of a list-valued ``system``, drop ``BLOCK_EXCLUDED_FIELDS``
(``cache_control``, Anthropic's prompt-caching marker).  Any other field, including one
this gateway does not know, is part of the key: an unknown field may change the answer,
and a needless cache miss is cheap while a wrong hit is not.

Canonical encoding (format version 1)
-------------------------------------
Every value is written as a one-byte tag and a body; integers are little-endian::

    None         b"N"
    True, False  b"T", b"F"
    integer      b"I" + int64            when -2**63 <= n < 2**63
                 b"J" + <str of n>       otherwise (decimal digits)
    float        an integral finite float is written as the integer it equals (so
                 1 and 1.0 give one key); any other as b"D" + float64 (one NaN)
    str          b"S" + uint32 length + UTF-8 bytes (lone surrogates pass through)
    list, tuple  b"L" + uint32 count + each item in order
    mapping      b"M" + uint32 count + (str key, value) for each kept entry, sorted by
                 the UTF-8 bytes of the key (so key order does not matter)

The key covers ``b"\\x01"`` (the format version) + str(scope) + str(provider) +
value(model) + mapping(body without ``model``).  Nothing depends on ``hash()``, so keys
are the same in every process, run and machine.  Other value types raise ``TypeError``;
nesting deeper than ``MAX_DEPTH`` raises ``ValueError`` (it also stops cycles).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from xxhash import xxh3_128_digest

__all__ = ("BLOCK_EXCLUDED_FIELDS", "EXCLUDED_FIELDS", "MAX_DEPTH", "cache_key")

#: Top-level fields of a chat body that never change the answer.
EXCLUDED_FIELDS: frozenset[str] = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "priority",
        "request_id",
        "store",
        "service_tier",
        "cache",
        "cache_control",
        "cache_ttl",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
#: Fields of a message, a content part, a tool or a system block that never change it.
BLOCK_EXCLUDED_FIELDS: frozenset[str] = frozenset({"cache_control"})
#: Deepest nesting of lists and objects accepted (the body itself is depth 1).
MAX_DEPTH = 128

_VERSION = b"\x01"
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_U32_MAX = 2**32 - 1
_NAN = b"D" + _F64.pack(math.nan)

# Where a value sits decides which fields of the mappings in it are dropped.
_GENERIC = 0  # anywhere else: nothing dropped
_TOP = 1  # the body: EXCLUDED_FIELDS dropped
_MESSAGES = 2  # the value of "messages"
_MESSAGE = 3  # one message: BLOCK_EXCLUDED_FIELDS dropped
_BLOCKS = 4  # "content" of a message, "tools", "system"
_BLOCK = 5  # one content part, tool or system block: BLOCK_EXCLUDED_FIELDS dropped

_ITEM_CONTEXT = {_MESSAGES: _MESSAGE, _BLOCKS: _BLOCK}
_FIELD_CONTEXT = {
    _TOP: {"messages": _MESSAGES, "tools": _BLOCKS, "system": _BLOCKS},
    _MESSAGE: {"content": _BLOCKS},
}
_EXCLUDED: dict[int, frozenset[str]] = {
    _TOP: EXCLUDED_FIELDS | {"model"},
    _MESSAGE: BLOCK_EXCLUDED_FIELDS,
    _BLOCK: BLOCK_EXCLUDED_FIELDS,
}
_NOTHING: frozenset[str] = frozenset()
_NO_FIELDS: dict[str, int] = {}


def cache_key(
    request: Mapping[str, Any],
    scope: str = "",
    *,
    provider: str = "",
    model: str | None = None,
) -> bytes:
    """The 16-byte cache key of ``request`` answered by ``model`` at ``provider``."""
    if not isinstance(request, Mapping):
        raise TypeError(f"cache_key: request must be a mapping, not {type(request).__name__}")
    out = bytearray(_VERSION)
    _str(out, scope)
    _str(out, provider)
    _value(out, request.get("model") if model is None else model, _GENERIC, 1)
    _mapping(out, request, _TOP, 1)
    return xxh3_128_digest(out)


def _str(out: bytearray, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"cache_key: expected a string, not {type(value).__name__}")
    data = value.encode("utf-8", "surrogatepass")
    if len(data) > _U32_MAX:
        raise ValueError("cache_key: string too long")
    out += b"S"
    out += _U32.pack(len(data))
    out += data


def _int(out: bytearray, value: int) -> None:
    if _I64_MIN <= value <= _I64_MAX:
        out += b"I"
        out += _I64.pack(value)
    else:
        out += b"J"
        _str(out, str(value))


def _value(out: bytearray, value: object, context: int, depth: int) -> None:
    if value is None:
        out += b"N"
    elif isinstance(value, bool):
        out += b"T" if value else b"F"
    elif isinstance(value, int):
        _int(out, int(value))
    elif isinstance(value, float):
        number = float(value)
        if number.is_integer():
            _int(out, int(number))
        elif number != number:
            out += _NAN
        else:
            out += b"D"
            out += _F64.pack(number)
    elif isinstance(value, str):
        _str(out, value)
    elif isinstance(value, Mapping):
        _mapping(out, value, context, depth + 1)
    elif isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"cache_key: request nested deeper than {MAX_DEPTH} levels")
        if len(value) > _U32_MAX:
            raise ValueError("cache_key: list too long")
        item_context = _ITEM_CONTEXT.get(context, _GENERIC)
        out += b"L"
        out += _U32.pack(len(value))
        for item in value:
            _value(out, item, item_context, depth + 1)
    else:
        raise TypeError(f"cache_key: cannot encode a value of type {type(value).__name__}")


def _mapping(out: bytearray, value: Mapping[Any, Any], context: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"cache_key: request nested deeper than {MAX_DEPTH} levels")
    excluded = _EXCLUDED.get(context, _NOTHING)
    entries: list[tuple[bytes, str, object]] = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"cache_key: object keys must be strings, not {type(key).__name__}")
        if key not in excluded:
            entries.append((key.encode("utf-8", "surrogatepass"), key, item))
    entries.sort(key=_first)
    fields = _FIELD_CONTEXT.get(context, _NO_FIELDS)
    out += b"M"
    out += _U32.pack(len(entries))
    for data, key, item in entries:
        out += b"S"
        out += _U32.pack(len(data))
        out += data
        _value(out, item, fields.get(key, _GENERIC), depth)


def _first(entry: tuple[bytes, str, object]) -> bytes:
    return entry[0]
