# The thread worker's epoll and its non-blocking reads: system calls that
# cannot block, made without letting the GIL go (see _poll.pyx).

from includes.sys_pthread cimport pthread_mutex_t, pthread_cond_t


cdef class Lock:
    cdef int locked                 # read and written holding the GIL
    cdef int waiters                # threads waiting for it without the GIL
    cdef pthread_mutex_t mutex      # for those waits
    cdef pthread_cond_t freed

    cdef void _acquire(self) noexcept
    cdef int _release(self) except -1


cdef class Poller:
    cdef readonly int epfd

    cdef int _ctl(self, int op, int fd, unsigned int events) except -1
