# POSIX calls the shared-memory hot paths make directly (no Python round trip).
from libc.stdint cimport int64_t


cdef extern from "<time.h>" nogil:
    """
    /* CLOCK_MONOTONIC in nanoseconds: the clock of time.monotonic_ns(), one clock for
       every process of a Linux host (it counts from boot), so readings compare across
       processes. */
    static inline int64_t aigw_monotonic_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    """
    int64_t aigw_monotonic_ns()


cdef extern from "<unistd.h>" nogil:
    ctypedef int pid_t
    pid_t getpid()


cdef extern from "<signal.h>" nogil:
    int kill(pid_t pid, int sig)
