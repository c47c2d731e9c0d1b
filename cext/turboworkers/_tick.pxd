# A fine tick for an event loop whose own timers are coarse (see _tick.pyx).

cdef class Tick:
    cdef int fd                     # the timerfd; -1 once closed
    cdef long interval_ns
    cdef readonly bint armed
    cdef readonly long active       # requests in flight (begin() without end())
    cdef readonly unsigned long fired   # ticks the loop was woken for

    cdef int _set(self, long ns) except -1
    cpdef begin(self)
    cpdef end(self)
