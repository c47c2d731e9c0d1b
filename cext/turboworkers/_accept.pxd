# System calls of the accept layer: the waits release the GIL, nothing else does.

from includes.sys_accept cimport sockaddr_storage, socklen_t
from posix.time cimport timespec


cdef class Semaphore:
    # A System V semaphore of value 1 used as a cross-process mutex; every
    # operation has SEM_UNDO, so the kernel releases it when a holder dies.
    cdef readonly int semid
    cdef readonly bint held


cdef class FileLock:
    # An fcntl (POSIX record) write lock on a file's first byte, and read
    # locks on its second byte saying who waits for it; the kernel releases
    # them when a process dies.
    cdef readonly int fd
    cdef readonly bint held

    cdef int _op(self, int cmd, short kind) noexcept nogil
    cdef int _range(self, int cmd, short kind, long start) noexcept nogil
    cdef int _other_lock(self, long start) noexcept nogil
    cdef int _held_elsewhere(self) noexcept nogil
    cdef int _waited_for(self) noexcept nogil
    cdef int _wait_for_it(self) noexcept nogil


cdef class Epoll:
    cdef readonly int epfd
    cdef int maxevents
    cdef void *events                         # epoll_event[maxevents]


cdef class AcceptRound:
    # one round of an accept thread: mutex, listener wait, accept4 batch
    cdef Epoll poller
    cdef Semaphore sem
    cdef FileLock lock
    cdef int notify_fd                        # an eventfd the event loop watches
    cdef int stop_fd                          # in the poller: readable once the worker stops
    cdef bint notify_due
    # set by a round that accepted, cleared by the event loop once it has
    # taken the connections
    cdef public int pending
    cdef double handed_at                     # CLOCK_MONOTONIC of the last hand-over
    cdef double stuck_after                   # seconds after which a loop that has
                                              # not taken it is deemed stuck
    cdef int capacity                         # most connections of one round
    cdef bint has_mutex
    # this worker's turn at the mutex: 1 held, 2 being let go, 0 free; set
    # and cleared with atomic operations, as the accept thread and the event
    # loop may both end a turn
    cdef readonly int holding
    cdef int turn                             # accepts per turn at the mutex
    cdef readonly int turn_left
    cdef readonly unsigned long accepted      # by accept_from, ever
    cdef readonly unsigned long turns         # taken by take(), ever
    # fcntl: the last turn ended full; before asking for the lock again, let
    # one of the workers woken by its release take it (see _let_waiter_in)
    cdef bint yield_due
    cdef double yield_max                     # seconds, at most, for a waiter to take it
    cdef int *fds
    cdef int *lfds
    cdef sockaddr_storage *addrs
    cdef socklen_t *addrlens

    cdef void _notify(self) noexcept nogil
    cdef int _take(self, timespec *ts) noexcept nogil
    cdef int _give_back(self) noexcept nogil
    cdef void _let_waiter_in(self) noexcept nogil
