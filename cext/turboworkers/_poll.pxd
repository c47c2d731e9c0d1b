# The thread worker's epoll and its non-blocking reads: system calls that
# cannot block, made without letting the GIL go (see _poll.pyx).

cdef class Poller:
    cdef readonly int epfd

    cdef int _ctl(self, int op, int fd, unsigned int events) except -1
