# The thread worker's epoll and its non-blocking reads: system calls that
# cannot block, made without letting the GIL go (see _poll.pyx).

from includes.sys_pthread cimport pthread_mutex_t


cdef class Poller:
    cdef readonly int epfd
    cdef pthread_mutex_t waiting              # held by the one thread in epoll_wait

    cdef int _ctl(self, int op, int fd, unsigned int events) except -1
