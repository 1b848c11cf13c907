# cython: language_level=3
"""Priority queue of waiting requests (compiled twin).

Same names, signatures and results as ``aigateway.hotpath._pqueue_py``, which is the
specification; read it for the rules.

Algorithm
---------
A binary min-heap of C structs ``(priority, seq, slot)`` in one growable array, ordered by
``(priority, seq)``: ``seq`` increases with every push, so equal priorities leave in
push order and no two entries ever compare equal.  Items live beside the heap, in a side
table: a Python list indexed by *slot* (so the garbage collector sees them), with a C
array giving the ``seq`` of the entry that owns each slot (0 when the slot is free) and a
stack of free slots.  Sifting moves 24-byte structs only, never Python objects.

``push`` takes a free slot, stores the item, appends the entry and sifts it up; the
handle it returns packs the slot (low 24 bits) and the low 40 bits of ``seq``.  ``cancel``
checks that the slot still belongs to that ``seq``, then drops the item and frees the
slot at once: O(1).  Its heap entry stays behind, recognisable as stale because its
``seq`` no longer matches its slot's; ``pop`` and ``peek`` discard stale entries that
reach the top, and once stale entries are more than 64 and outnumber live ones, the
heap is rebuilt without them in O(n) (Floyd's heapify).  A handle is only misread after
2**40 pushes reuse its slot with the same low 40 bits of ``seq``.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int64_t, uint64_t

__all__ = ("PriorityQueue",)

cdef enum:
    _SLOT_BITS = 24
    _MIN_CAPACITY = 16
    _COMPACT_MIN = 64

cdef Py_ssize_t _MAX_SLOTS = 1 << _SLOT_BITS
cdef uint64_t _SLOT_MASK = (1 << _SLOT_BITS) - 1
cdef uint64_t _SEQ_MASK = (<uint64_t>1 << (64 - _SLOT_BITS)) - 1


cdef inline bint _before(const HeapEntry* a, const HeapEntry* b) noexcept:
    return a.priority < b.priority or (a.priority == b.priority and a.seq < b.seq)


@cython.final
cdef class PriorityQueue:
    """Items ordered by priority (lower is more urgent), FIFO among equal priorities."""

    def __cinit__(self):
        self._heap = NULL
        self._size = self._capacity = 0
        self._items = []
        self._slot_seq = NULL
        self._slots = self._slots_capacity = 0
        self._free = NULL
        self._free_len = 0
        self._live = 0
        self._seq = 0

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._slot_seq)
        PyMem_Free(self._free)

    def push(self, object priority, object item):
        """Queue ``item``; return a handle for ``cancel``."""
        # PyLong_AsLongLong takes ints and __index__ only (a C-typed argument would also
        # truncate floats): TypeError or OverflowError as in the pure twin.
        cdef int64_t key = PyLong_AsLongLong(priority)
        cdef Py_ssize_t slot = self._new_slot()
        cdef HeapEntry* entry
        cdef uint64_t seq
        if self._size == self._capacity:
            self._grow_heap()
        self._seq += 1
        seq = self._seq
        self._slot_seq[slot] = seq
        self._items[slot] = item
        entry = self._heap + self._size
        entry.priority = key
        entry.seq = seq
        entry.slot = slot
        self._size += 1
        self._sift_up(self._size - 1)
        self._live += 1
        return PyLong_FromUnsignedLongLong(((seq & _SEQ_MASK) << _SLOT_BITS) | <uint64_t>slot)

    def pop(self):
        """Remove and return the most urgent item."""
        cdef HeapEntry* top = self._top()
        cdef Py_ssize_t slot
        if top == NULL:
            raise IndexError("pop from an empty priority queue")
        slot = top.slot
        self._remove_top()
        item = self._items[slot]
        self._free_slot(slot)
        return item

    def peek(self):
        """The most urgent item, left in the queue."""
        cdef HeapEntry* top = self._top()
        if top == NULL:
            raise IndexError("peek into an empty priority queue")
        return self._items[top.slot]

    def peek_priority(self):
        """The priority of the most urgent item."""
        cdef HeapEntry* top = self._top()
        if top == NULL:
            raise IndexError("peek into an empty priority queue")
        return top.priority

    def cancel(self, object handle):
        """Withdraw the item ``handle`` refers to; ``False`` if it already left the queue."""
        cdef uint64_t value
        cdef Py_ssize_t slot
        try:
            value = handle
        except (OverflowError, TypeError):
            return False
        slot = <Py_ssize_t>(value & _SLOT_MASK)
        if (
            slot >= self._slots
            or self._slot_seq[slot] == 0
            or (self._slot_seq[slot] & _SEQ_MASK) != (value >> _SLOT_BITS)
        ):
            return False
        self._free_slot(slot)
        if self._size - self._live > _COMPACT_MIN and self._size - self._live > self._live:
            self._compact()
        return True

    def clear(self):
        """Remove every item."""
        items = self._items  # released last, as in _free_slot
        self._size = 0
        self._slots = 0
        self._free_len = 0
        self._live = 0
        self._items = []
        del items

    def __len__(self):
        return self._live

    def __bool__(self):
        return self._live > 0

    def __repr__(self):
        return f"<PriorityQueue: {self._live} queued>"

    # --- slots ------------------------------------------------------------------------

    cdef Py_ssize_t _new_slot(self) except -1:
        cdef Py_ssize_t capacity
        cdef void* grown
        if self._free_len:
            self._free_len -= 1
            return self._free[self._free_len]
        if self._slots == self._slots_capacity:
            if self._slots == _MAX_SLOTS:
                raise OverflowError(f"a priority queue holds at most {_MAX_SLOTS} items")
            capacity = max(_MIN_CAPACITY, min(2 * self._slots_capacity, _MAX_SLOTS))
            grown = PyMem_Realloc(self._slot_seq, capacity * sizeof(uint64_t))
            if grown == NULL:
                raise MemoryError()
            self._slot_seq = <uint64_t*>grown
            grown = PyMem_Realloc(self._free, capacity * sizeof(Py_ssize_t))
            if grown == NULL:
                raise MemoryError()
            self._free = <Py_ssize_t*>grown
            self._slots_capacity = capacity
        self._items.append(None)
        self._slots += 1
        return self._slots - 1

    cdef void _free_slot(self, Py_ssize_t slot) noexcept:
        # The item is released last, once the queue is consistent again: its __del__ may
        # well use this queue.
        item = self._items[slot]
        self._items[slot] = None
        self._slot_seq[slot] = 0
        self._free[self._free_len] = slot
        self._free_len += 1
        self._live -= 1
        del item

    # --- heap -------------------------------------------------------------------------

    cdef int _grow_heap(self) except -1:
        cdef Py_ssize_t capacity = max(_MIN_CAPACITY, 2 * self._capacity)
        cdef void* grown = PyMem_Realloc(self._heap, capacity * sizeof(HeapEntry))
        if grown == NULL:
            raise MemoryError()
        self._heap = <HeapEntry*>grown
        self._capacity = capacity
        return 0

    cdef void _sift_up(self, Py_ssize_t pos) noexcept:
        cdef HeapEntry* heap = self._heap
        cdef HeapEntry entry = heap[pos]
        cdef Py_ssize_t parent
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _before(&entry, heap + parent):
                break
            heap[pos] = heap[parent]
            pos = parent
        heap[pos] = entry

    cdef void _sift_down(self, Py_ssize_t pos) noexcept:
        cdef HeapEntry* heap = self._heap
        cdef Py_ssize_t size = self._size
        cdef HeapEntry entry = heap[pos]
        cdef Py_ssize_t child
        while True:
            child = 2 * pos + 1
            if child >= size:
                break
            if child + 1 < size and _before(heap + child + 1, heap + child):
                child += 1
            if not _before(heap + child, &entry):
                break
            heap[pos] = heap[child]
            pos = child
        heap[pos] = entry

    cdef void _remove_top(self) noexcept:
        self._size -= 1
        if self._size:
            self._heap[0] = self._heap[self._size]
            self._sift_down(0)

    cdef HeapEntry* _top(self) noexcept:
        """The top entry after dropping cancelled ones; NULL if the heap is empty."""
        cdef HeapEntry* heap = self._heap
        while self._size:
            if self._slot_seq[heap[0].slot] == heap[0].seq:
                return heap
            self._remove_top()
        return NULL

    cdef void _compact(self) noexcept:
        cdef HeapEntry* heap = self._heap
        cdef Py_ssize_t kept = 0
        cdef Py_ssize_t i
        for i in range(self._size):
            if self._slot_seq[heap[i].slot] == heap[i].seq:
                heap[kept] = heap[i]
                kept += 1
        self._size = kept
        for i in range(kept // 2 - 1, -1, -1):
            self._sift_down(i)
