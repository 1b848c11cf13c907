# cython: language_level=3
"""Response-cache keys (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._cache_key_py``, which is the
specification; read it for the canonical encoding.

Algorithm
---------
The canonical encoding is written into one C buffer (4 KiB on the stack, moved to the
heap and doubled when a body needs more) by a recursive walk with exact-type fast paths
for what JSON decoding produces: ``dict`` entries come from ``PyDict_Next``, ``list``
items from the array, strings as their cached UTF-8 form (for ASCII, the string's own
bytes), numbers through C conversions.  The entries of an object go into a small C array
(16 on the stack, else on the heap) holding a reference to each key and value, and are
sorted there by the UTF-8 bytes of the key (insertion sort up to 16 entries, ``qsort``
above), so no Python list, tuple or bytes is made per object.  Subclasses and other
``Mapping`` types take the generic protocol, like the pure twin.  At the end, the buffer
is hashed through a memoryview, without a copy, by ``xxhash.xxh3_128_digest``.
"""

from collections.abc import Mapping

from cpython.dict cimport PyDict_Next, PyDict_Size
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong, PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.set cimport PySet_Contains
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.math cimport floor, isfinite
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy

from xxhash import xxh3_128_digest

from ._cache_key_py import BLOCK_EXCLUDED_FIELDS, EXCLUDED_FIELDS, MAX_DEPTH

__all__ = ("BLOCK_EXCLUDED_FIELDS", "EXCLUDED_FIELDS", "MAX_DEPTH", "cache_key")

cdef enum:
    _STACK_BUFFER = 4096
    _STACK_ENTRIES = 16
    _MAX_DEPTH = 128
    # Contexts, as in the pure twin: where a value sits decides what its objects drop.
    _GENERIC = 0
    _TOP = 1
    _MESSAGES = 2
    _MESSAGE = 3
    _BLOCKS = 4
    _BLOCK = 5

assert MAX_DEPTH == _MAX_DEPTH

cdef frozenset _TOP_EXCLUDED = frozenset(EXCLUDED_FIELDS | {"model"})
cdef frozenset _BLOCK_EXCLUDED = frozenset(BLOCK_EXCLUDED_FIELDS)
cdef uint64_t _NAN_BITS = 0x7FF8000000000000
cdef uint32_t _U32_MAX = 0xFFFFFFFF


# --- the output buffer ------------------------------------------------------------------

cdef struct _Writer:
    char* data
    Py_ssize_t length
    Py_ssize_t capacity
    bint on_heap


cdef int _grow(_Writer* w, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity = w.capacity * 2
    cdef char* grown
    if capacity < w.length + extra:
        capacity = w.length + extra
    if w.on_heap:
        grown = <char*>PyMem_Realloc(w.data, capacity)
        if grown == NULL:
            raise MemoryError()
    else:
        grown = <char*>PyMem_Malloc(capacity)
        if grown == NULL:
            raise MemoryError()
        memcpy(grown, w.data, w.length)
        w.on_heap = True
    w.data = grown
    w.capacity = capacity
    return 0


cdef inline int _put(_Writer* w, const char* src, Py_ssize_t n) except -1:
    if w.length + n > w.capacity:
        _grow(w, n)
    memcpy(w.data + w.length, src, n)
    w.length += n
    return 0


cdef inline int _put_tag(_Writer* w, char tag) except -1:
    if w.length + 1 > w.capacity:
        _grow(w, 1)
    w.data[w.length] = tag
    w.length += 1
    return 0


cdef inline int _put_tagged_u64(_Writer* w, char tag, uint64_t value, int size) except -1:
    """``tag`` then the low ``size`` bytes of ``value``, little-endian."""
    cdef int i
    cdef char* out
    if w.length + 1 + size > w.capacity:
        _grow(w, 1 + size)
    out = w.data + w.length
    out[0] = tag
    for i in range(size):
        out[1 + i] = <char>((value >> (8 * i)) & 0xFF)
    w.length += 1 + size
    return 0


cdef int _put_bytes(_Writer* w, const char* data, Py_ssize_t n) except -1:
    """A string body: b"S", uint32 length, bytes."""
    if <size_t>n > _U32_MAX:
        raise ValueError("cache_key: string too long")
    _put_tagged_u64(w, b"S", <uint64_t>n, 4)
    _put(w, data, n)
    return 0


cdef int _put_str(_Writer* w, object value) except -1:
    cdef Py_ssize_t n
    cdef const char* data
    cdef bytes encoded
    if not isinstance(value, str):
        raise TypeError(f"cache_key: expected a string, not {type(value).__name__}")
    try:
        data = PyUnicode_AsUTF8AndSize(value, &n)
    except UnicodeEncodeError:  # lone surrogates
        encoded = (<str>value).encode("utf-8", "surrogatepass")
        return _put_bytes(w, encoded, len(encoded))
    return _put_bytes(w, data, n)


# --- values -----------------------------------------------------------------------------

cdef int _put_int(_Writer* w, object value) except -1:
    cdef int overflow = 0
    cdef long long number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        _put_tag(w, b"J")
        return _put_str(w, str(value))
    return _put_tagged_u64(w, b"I", <uint64_t>number, 8)


cdef int _put_float(_Writer* w, double number) except -1:
    cdef uint64_t bits
    if isfinite(number) and number == floor(number):
        if -9223372036854775808.0 <= number < 9223372036854775808.0:
            return _put_tagged_u64(w, b"I", <uint64_t><int64_t>number, 8)
        _put_tag(w, b"J")
        return _put_str(w, str(int(number)))
    if number != number:
        bits = _NAN_BITS
    else:
        memcpy(&bits, &number, 8)
    return _put_tagged_u64(w, b"D", bits, 8)


cdef int _put_value(_Writer* w, object value, int context, int depth) except -1:
    cdef type kind = type(value)
    if kind is str:
        return _put_str(w, value)
    if kind is dict:
        return _put_mapping(w, value, context, depth + 1)
    if kind is list or kind is tuple:
        return _put_list(w, value, context, depth)
    if kind is int:
        return _put_int(w, value)
    if kind is float:
        return _put_float(w, value)
    if value is None:
        return _put_tag(w, b"N")
    if kind is bool:
        return _put_tag(w, b"T" if value else b"F")
    # Subclasses and other mapping types: the pure twin's order of checks.
    if isinstance(value, bool):
        return _put_tag(w, b"T" if value else b"F")
    if isinstance(value, int):
        return _put_int(w, int(value))
    if isinstance(value, float):
        return _put_float(w, float(value))
    if isinstance(value, str):
        return _put_str(w, value)
    if isinstance(value, Mapping):
        return _put_mapping(w, value, context, depth + 1)
    if isinstance(value, (list, tuple)):
        return _put_list(w, tuple(value), context, depth)
    raise TypeError(f"cache_key: cannot encode a value of type {kind.__name__}")


cdef int _put_list(_Writer* w, object value, int context, int depth) except -1:
    cdef Py_ssize_t i, n
    cdef int item_context = (
        _MESSAGE if context == _MESSAGES else _BLOCK if context == _BLOCKS else _GENERIC
    )
    if depth >= _MAX_DEPTH:
        raise ValueError(f"cache_key: request nested deeper than {_MAX_DEPTH} levels")
    if type(value) is list:
        n = PyList_GET_SIZE(value)
        if <size_t>n > _U32_MAX:
            raise ValueError("cache_key: list too long")
        _put_tagged_u64(w, b"L", <uint64_t>n, 4)
        for i in range(n):
            if i >= PyList_GET_SIZE(value):
                raise RuntimeError("cache_key: a list changed size while it was encoded")
            _put_value(w, <object>PyList_GET_ITEM(value, i), item_context, depth + 1)
        return 0
    n = PyTuple_GET_SIZE(value)
    if <size_t>n > _U32_MAX:
        raise ValueError("cache_key: list too long")
    _put_tagged_u64(w, b"L", <uint64_t>n, 4)
    for i in range(n):
        _put_value(w, <object>PyTuple_GET_ITEM(value, i), item_context, depth + 1)
    return 0


# --- objects ----------------------------------------------------------------------------

cdef struct _Entry:
    const char* key        # UTF-8 bytes of the key, owned by holder
    Py_ssize_t key_len
    PyObject* holder       # a reference: the key (str) or its encoding (bytes)
    PyObject* value        # a reference


cdef inline int _compare_keys(const _Entry* a, const _Entry* b) noexcept nogil:
    cdef Py_ssize_t n = a.key_len if a.key_len < b.key_len else b.key_len
    cdef int order = memcmp(a.key, b.key, n)
    if order:
        return order
    return (a.key_len > b.key_len) - (a.key_len < b.key_len)


cdef int _qsort_compare(const void* a, const void* b) noexcept nogil:
    return _compare_keys(<const _Entry*>a, <const _Entry*>b)


cdef void _sort(_Entry* entries, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i, j
    cdef _Entry entry
    if n > _STACK_ENTRIES:
        qsort(entries, n, sizeof(_Entry), _qsort_compare)
        return
    for i in range(1, n):
        entry = entries[i]
        j = i
        while j > 0 and _compare_keys(&entry, entries + j - 1) < 0:
            entries[j] = entries[j - 1]
            j -= 1
        entries[j] = entry


cdef inline bint _is(const _Entry* entry, const char* name, Py_ssize_t n) noexcept:
    return entry.key_len == n and memcmp(entry.key, name, n) == 0


cdef int _field_context(int context, const _Entry* entry) noexcept:
    if context == _TOP:
        if _is(entry, b"messages", 8):
            return _MESSAGES
        if _is(entry, b"tools", 5) or _is(entry, b"system", 6):
            return _BLOCKS
    elif context == _MESSAGE:
        if _is(entry, b"content", 7):
            return _BLOCKS
    return _GENERIC


cdef int _add_entry(_Entry* entry, object key, object value) except -1:
    """Fill ``entry`` with new references to the key's UTF-8 form and to the value."""
    cdef Py_ssize_t n
    cdef const char* data
    cdef object holder
    cdef bytes encoded
    if not isinstance(key, str):
        raise TypeError(f"cache_key: object keys must be strings, not {type(key).__name__}")
    try:
        data = PyUnicode_AsUTF8AndSize(key, &n)
        holder = key
    except UnicodeEncodeError:  # lone surrogates
        encoded = (<str>key).encode("utf-8", "surrogatepass")
        holder = encoded
        data = encoded
        n = len(encoded)
    entry.key = data
    entry.key_len = n
    Py_INCREF(holder)
    entry.holder = <PyObject*>holder
    Py_INCREF(value)
    entry.value = <PyObject*>value
    return 0


cdef int _put_mapping(_Writer* w, object mapping, int context, int depth) except -1:
    cdef _Entry stack_entries[_STACK_ENTRIES]
    cdef _Entry* entries = stack_entries
    cdef Py_ssize_t size, count = 0, i, position = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef frozenset excluded = (
        _TOP_EXCLUDED if context == _TOP
        else _BLOCK_EXCLUDED if context == _MESSAGE or context == _BLOCK
        else None
    )
    if depth > _MAX_DEPTH:
        raise ValueError(f"cache_key: request nested deeper than {_MAX_DEPTH} levels")
    if type(mapping) is dict:
        items = None
        size = PyDict_Size(mapping)
    else:
        items = list(mapping.items())
        size = len(items)
    if size > _STACK_ENTRIES:
        entries = <_Entry*>PyMem_Malloc(size * sizeof(_Entry))
        if entries == NULL:
            raise MemoryError()
    try:
        if items is None:
            while PyDict_Next(mapping, &position, &key, &value):
                if excluded is not None and PySet_Contains(excluded, <object>key):
                    continue
                if count == size:
                    raise RuntimeError("cache_key: a dict changed size while it was encoded")
                _add_entry(entries + count, <object>key, <object>value)
                count += 1
        else:
            for item_key, item_value in items:
                if excluded is not None and isinstance(item_key, str) and (
                    item_key in excluded
                ):
                    continue
                _add_entry(entries + count, item_key, item_value)
                count += 1
        _sort(entries, count)
        _put_tagged_u64(w, b"M", <uint64_t>count, 4)
        for i in range(count):
            _put_bytes(w, entries[i].key, entries[i].key_len)
            _put_value(w, <object>entries[i].value, _field_context(context, entries + i), depth)
    finally:
        for i in range(count):
            Py_DECREF(<object>entries[i].holder)
            Py_DECREF(<object>entries[i].value)
        if entries != stack_entries:
            PyMem_Free(entries)
    return 0


# --- the key ----------------------------------------------------------------------------

def cache_key(request, scope="", *, provider="", model=None):
    """The 16-byte cache key of ``request`` answered by ``model`` at ``provider``."""
    cdef char stack[_STACK_BUFFER]
    cdef _Writer w
    if not (type(request) is dict or isinstance(request, Mapping)):
        raise TypeError(f"cache_key: request must be a mapping, not {type(request).__name__}")
    w.data = stack
    w.length = 0
    w.capacity = _STACK_BUFFER
    w.on_heap = False
    try:
        _put_tag(&w, b"\x01")
        _put_str(&w, scope)
        _put_str(&w, provider)
        _put_value(&w, request.get("model") if model is None else model, _GENERIC, 1)
        _put_mapping(&w, request, _TOP, 1)
        view = PyMemoryView_FromMemory(w.data, w.length, PyBUF_READ)
        try:
            return xxh3_128_digest(view)
        finally:
            view.release()
    finally:
        if w.on_heap:
            PyMem_Free(w.data)
