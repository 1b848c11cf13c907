# Fields and C-level methods of the compiled priority queue (implemented in _pqueue_c.pyx).
cimport cython
from libc.stdint cimport int64_t, uint64_t


# One heap entry: ordered by (priority, seq); the item is in the side table at slot.
ctypedef struct HeapEntry:
    int64_t priority
    uint64_t seq
    Py_ssize_t slot


@cython.final
cdef class PriorityQueue:
    # Binary min-heap of entries, live and cancelled ones alike.
    cdef HeapEntry* _heap
    cdef Py_ssize_t _size
    cdef Py_ssize_t _capacity
    # Side table, one slot per queued item: the item, and the seq of the entry owning the
    # slot (0: the slot is free; a heap entry whose seq differs was cancelled).
    cdef list _items
    cdef uint64_t* _slot_seq
    cdef Py_ssize_t _slots
    cdef Py_ssize_t _slots_capacity
    # Stack of free slots.
    cdef Py_ssize_t* _free
    cdef Py_ssize_t _free_len
    # Queued (not cancelled) items, and the last sequence number given out.
    cdef Py_ssize_t _live
    cdef uint64_t _seq

    cdef Py_ssize_t _new_slot(self) except -1
    cdef void _free_slot(self, Py_ssize_t slot) noexcept
    cdef int _grow_heap(self) except -1
    cdef void _sift_up(self, Py_ssize_t pos) noexcept
    cdef void _sift_down(self, Py_ssize_t pos) noexcept
    cdef void _remove_top(self) noexcept
    cdef HeapEntry* _top(self) noexcept
    cdef void _compact(self) noexcept
