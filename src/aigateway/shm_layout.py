"""Shared-memory layouts, declared once with named fields; offsets derive from them.

A region of the node's shared memory (``aigateway.shm``) is a run of bytes that several
processes read and write, so every reader must agree on where each value sits.  Each
region declares that once, as a ``Layout`` of ``Field``\\ s, and everything else is
derived from the declaration when the module is imported, never per access::

    BUCKET = Layout("token bucket", (
        Field("magic", "u32"),
        Field("version", "u32"),
        Field("rate_per_s", "f64", doc="tokens a second"),
        ...
    ))
    BUCKET.offset_of("rate_per_s")     # 8: bytes from the start of the region
    BUCKET.index("rate_per_s")         # 1: its index in the region cast to "d"
    BUCKET.struct.unpack_from(buf, 0)  # every value, in order (a struct.Struct, built once)
    BUCKET.describe()                  # the table a docstring draws (a test compares them)

Offsets follow C's rules: each field sits at the next multiple of its alignment (its
size; 1 for bytes; the largest of its fields for a nested layout), and the layout is
padded to a multiple of its alignment (or to ``size``, when given).  So a Cython
``ctypedef struct`` with the same fields in the same order has the same offsets, and the
compiled twins check at import that theirs do (``Layout.check``).  Values are in the
machine's byte order: a region is only ever shared within one node.

A field may repeat (``count``) and may itself be a ``Layout`` (an array of records, such
as the buckets of a time window); ``offset_of`` takes dotted names (``"window.calls"``,
the first element's).

A region without a header of its own records ``fingerprint(*layouts)`` where it is
listed (the segment's directory), so that a process built with other declarations
refuses it instead of misreading it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

#: What ``read`` and ``write`` take: a buffer (``bytearray``, ``memoryview``, ``mmap``).
Buffer = Any

__all__ = ("TYPES", "Field", "Layout", "fingerprint")

#: The scalar types a field may have, with their ``struct`` codes.
TYPES: Final = {
    "u8": "B",
    "u16": "H",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "f64": "d",
    "bytes": "s",  # ``count`` bytes, one value
}


@dataclass(frozen=True, slots=True)
class Field:
    """One named field: a scalar type of ``TYPES`` or a nested ``Layout``, ``count`` times."""

    name: str
    type: str | Layout
    count: int = 1
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"Field: {self.name!r} is not an identifier")
        if not isinstance(self.type, Layout) and self.type not in TYPES:
            raise ValueError(f"Field {self.name}: unknown type {self.type!r}")
        if self.count < 1:
            raise ValueError(f"Field {self.name}: count must be >= 1")

    @property
    def item_size(self) -> int:
        """Bytes of one element (all of them for ``bytes``)."""
        if isinstance(self.type, Layout):
            return self.type.size
        if self.type == "bytes":
            return self.count
        return struct.calcsize("=" + TYPES[self.type])

    @property
    def size(self) -> int:
        return self.item_size if self.type == "bytes" else self.item_size * self.count

    @property
    def align(self) -> int:
        if isinstance(self.type, Layout):
            return self.type.align
        return 1 if self.type == "bytes" else self.item_size

    @property
    def label(self) -> str:
        """The type as ``describe`` writes it: ``u32``, ``u64[2]``, ``bytes[120]``."""
        name = self.type.name if isinstance(self.type, Layout) else self.type
        return name if self.count == 1 else f"{name}[{self.count}]"


class Layout:
    """The fields of a region (or of a record inside one), in order, with their offsets."""

    __slots__ = ("_offsets", "_scalars", "align", "fields", "name", "size", "struct")

    def __init__(self, name: str, fields: Iterable[Field], *, size: int | None = None) -> None:
        self.name = name
        self.fields: tuple[Field, ...] = tuple(fields)
        if not self.fields:
            raise ValueError(f"layout {name}: no fields")
        self._offsets: dict[str, int] = {}
        at = 0
        for field in self.fields:
            if field.name in self._offsets:
                raise ValueError(f"layout {name}: two fields named {field.name}")
            at = _round_up(at, field.align)
            self._offsets[field.name] = at
            at += field.size
        self.align: int = max(field.align for field in self.fields)
        natural = _round_up(at, self.align)
        if size is not None and (size < natural or size % self.align):
            raise ValueError(f"layout {name}: its fields take {natural} bytes, not {size}")
        self.size: int = natural if size is None else size
        self.struct = struct.Struct("=" + self._format())
        # One Struct per single value (a scalar, or a run of bytes), for read() and write().
        self._scalars = {
            field.name: struct.Struct("=" + _code(field))
            for field in self.fields
            if not isinstance(field.type, Layout) and (field.count == 1 or field.type == "bytes")
        }

    @property
    def signature(self) -> str:
        """Every field's name, type, count and offset, and the size: what a fingerprint
        digests (field docs do not count)."""
        parts = []
        for field in self.fields:
            kind = f"({field.type.signature})" if isinstance(field.type, Layout) else field.type
            parts.append(f"{field.name}:{kind}*{field.count}@{self._offsets[field.name]}")
        return f"{self.name}{{{','.join(parts)}}}={self.size}"

    def offset_of(self, name: str) -> int:
        """Bytes from the start of the layout to field ``name`` (dotted for nested fields)."""
        head, _, rest = name.partition(".")
        field = self.field(head)
        offset = self._offsets[head]
        if not rest:
            return offset
        if not isinstance(field.type, Layout):
            raise KeyError(f"{self.name}.{head} has no fields")
        return offset + field.type.offset_of(rest)

    def index(self, name: str) -> int:
        """The index of scalar field ``name`` in the region cast to its type (``"d"``...)."""
        field = self._leaf(name)
        if isinstance(field.type, Layout) or field.type == "bytes":
            raise TypeError(f"{self.name}.{name} is not a scalar field")
        offset = self.offset_of(name)
        assert offset % field.item_size == 0  # C alignment guarantees it
        return offset // field.item_size

    def read(self, buffer: Buffer, name: str, at: int = 0) -> Any:
        """The value of field ``name`` of the layout that starts at byte ``at`` of ``buffer``
        (for code off the hot paths: a hot path keeps an index or a ``Struct`` instead)."""
        return self._scalar(name).unpack_from(buffer, at + self._offsets[name])[0]

    def write(self, buffer: Buffer, name: str, value: Any, at: int = 0) -> None:
        """Set field ``name`` of the layout that starts at byte ``at`` of ``buffer``."""
        self._scalar(name).pack_into(buffer, at + self._offsets[name], value)

    def field(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"the layout {self.name!r} has no field {name!r}")

    def offsets(self) -> dict[str, int]:
        """Every top-level field's offset, by name."""
        return dict(self._offsets)

    def check(self, size: int, offsets: Mapping[str, int]) -> None:
        """Raise ``TypeError`` unless ``size`` and ``offsets`` (of a C struct meant to
        mirror this layout) are the declared ones."""
        if size != self.size or dict(offsets) != self._offsets:
            raise TypeError(
                f"the compiled layout of the {self.name} (size {size}, offsets {dict(offsets)}) "
                f"differs from its declaration (size {self.size}, offsets {self._offsets})"
            )

    def describe(self, indent: str = "") -> str:
        """The layout as a table (offset, type, name, doc), for docstrings to draw."""
        types = max(len(field.label) for field in self.fields) + 2
        names = max(len(field.name) for field in self.fields) + 2
        lines = []
        for field in self.fields:
            offset = self._offsets[field.name]
            line = f"{indent}{offset:<5}{field.label:<{types}}{field.name:<{names}}{field.doc}"
            lines.append(line.rstrip())
            if isinstance(field.type, Layout):
                lines.append(field.type.describe(indent + "     "))
        lines.append(f"{indent}{self.size:<5}(end)")
        return "\n".join(lines)

    def _scalar(self, name: str) -> struct.Struct:
        try:
            return self._scalars[name]
        except KeyError:
            self.field(name)  # KeyError for an unknown name
            raise TypeError(f"{self.name}.{name} is not one value") from None

    def _leaf(self, name: str) -> Field:
        head, _, rest = name.partition(".")
        field = self.field(head)
        if not rest:
            return field
        if not isinstance(field.type, Layout):
            raise KeyError(f"{self.name}.{head} has no fields")
        return field.type._leaf(rest)

    def _format(self) -> str:
        parts = []
        at = 0
        for field in self.fields:
            offset = self._offsets[field.name]
            if offset > at:
                parts.append(f"{offset - at}x")
            if isinstance(field.type, Layout):
                parts.append(field.type._format() * field.count)
            else:
                parts.append(_code(field))
            at = offset + field.size
        if self.size > at:
            parts.append(f"{self.size - at}x")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"<Layout {self.name} ({self.size} bytes)>"


def fingerprint(*layouts: Layout) -> str:
    """A short digest of the layouts (hex), equal across processes that declare them alike."""
    text = ";".join(layout.signature for layout in layouts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _code(field: Field) -> str:
    """The struct code of a scalar field (or of a run of bytes)."""
    assert isinstance(field.type, str)
    code = TYPES[field.type]
    return code if field.count == 1 and code != "s" else f"{field.count}{code}"


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align
