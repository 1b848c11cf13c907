# C11-style atomic operations on words of a shared-memory region (GCC/Clang builtins).
#
# A region is written by several processes at once, so every access to a word that
# another process may write at the same time goes through one of these: a plain load or
# store could be torn, cached in a register, or reordered.  Loads acquire and stores
# release, so a word published last (a magic number, an owner pid) makes the words
# written before it visible; a compare-and-swap is a full barrier.  Words that only their
# owner writes (a stats slot) use the relaxed forms: atomic, but without ordering cost.
from libc.stdint cimport int64_t, uint64_t


cdef extern from *:
    """
    static inline int64_t aigw_load_i64(const int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void aigw_store_i64(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline int aigw_cas_i64(int64_t *p, int64_t *expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0,
                                           __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE);
    }
    static inline uint64_t aigw_load_u64(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void aigw_store_u64(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline uint64_t aigw_load_u64_relaxed(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void aigw_store_u64_relaxed(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    }
    static inline int64_t aigw_load_i64_relaxed(const int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void aigw_store_i64_relaxed(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    }
    static inline double aigw_load_f64(const double *p) {
        double v;
        __atomic_load(p, &v, __ATOMIC_ACQUIRE);
        return v;
    }
    static inline void aigw_store_f64(double *p, double v) {
        __atomic_store(p, &v, __ATOMIC_RELEASE);
    }
    static inline double aigw_load_f64_relaxed(const double *p) {
        double v;
        __atomic_load(p, &v, __ATOMIC_RELAXED);
        return v;
    }
    static inline void aigw_store_f64_relaxed(double *p, double v) {
        __atomic_store(p, &v, __ATOMIC_RELAXED);
    }
    """
    int64_t aigw_load_i64(const int64_t* p) nogil
    void aigw_store_i64(int64_t* p, int64_t v) nogil
    bint aigw_cas_i64(int64_t* p, int64_t* expected, int64_t desired) nogil
    uint64_t aigw_load_u64(const uint64_t* p) nogil
    void aigw_store_u64(uint64_t* p, uint64_t v) nogil
    uint64_t aigw_load_u64_relaxed(const uint64_t* p) nogil
    void aigw_store_u64_relaxed(uint64_t* p, uint64_t v) nogil
    int64_t aigw_load_i64_relaxed(const int64_t* p) nogil
    void aigw_store_i64_relaxed(int64_t* p, int64_t v) nogil
    double aigw_load_f64(const double* p) nogil
    void aigw_store_f64(double* p, double v) nogil
    double aigw_load_f64_relaxed(const double* p) nogil
    void aigw_store_f64_relaxed(double* p, double v) nogil
