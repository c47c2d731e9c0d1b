# System calls of the accept layer: the waits release the GIL, nothing else does.


cdef class Semaphore:
    # A System V semaphore of value 1 used as a cross-process mutex; every
    # operation has SEM_UNDO, so the kernel releases it when a holder dies.
    cdef readonly int semid
    cdef readonly bint held


cdef class FileLock:
    # An fcntl (POSIX record) write lock on a whole file; the kernel
    # releases it when the holding process dies.
    cdef readonly int fd
    cdef readonly bint held

    cdef int _op(self, int cmd, short kind) noexcept nogil


cdef class Epoll:
    cdef readonly int epfd
    cdef int maxevents
    cdef void *events                         # epoll_event[maxevents]
