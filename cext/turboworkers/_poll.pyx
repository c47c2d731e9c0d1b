# The epoll instance of EpollThreadWorker and its non-blocking reads.
#
# The standard library's select.epoll and socket.recv let the GIL go around
# every system call, even one that cannot block (epoll_ctl, a recv with
# MSG_DONTWAIT, an epoll_wait with a zero timeout). In a process whose
# threads all want the GIL, each such release hands the GIL to another
# thread, and the caller then waits to get it back: up to the interpreter's
# switch interval (5 ms), which is where the long tail of gthread-style
# workers comes from. Here the GIL is let go only for a wait that can block.

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from libc.errno cimport errno, EINTR, EAGAIN
from libc.string cimport memset
from posix.unistd cimport close

from includes.sys_epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait,
                                 EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD)
from includes.sys_socket cimport recv, MSG_DONTWAIT
from includes.sys_pthread cimport (pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock,
                                   pthread_mutex_unlock, pthread_cond_init, pthread_cond_destroy,
                                   pthread_cond_wait, pthread_cond_broadcast)

# recv_nowait reads here, then copies what came: it never lets the GIL go,
# so one buffer serves every thread of the process.
cdef enum:
    _RECV_BUF = 65536
cdef char _recv_buf[_RECV_BUF]


cdef class Lock:
    """A mutex for code that runs holding the GIL, used as threading.Lock is
    in ``with`` blocks, but taken only by a thread that holds the GIL.

    A thread that finds threading.Lock held waits for it without the GIL,
    and when the lock is released it is that thread's before it has the GIL
    back. The thread that released it, which holds the GIL, then finds it
    taken the next time it wants it and must wait too, letting the GIL go: a
    convoy in which the lock and the GIL change hands together at every
    acquisition, once a single thread lost the GIL inside a critical section.
    Here a waiter only learns, without the GIL, that the lock was released;
    it takes the lock after it got the GIL back, if no one took it meanwhile.
    """

    def __cinit__(self):
        self.locked = 0
        self.waiters = 0
        if pthread_mutex_init(&self.mutex, NULL) != 0 or \
                pthread_cond_init(&self.freed, NULL) != 0:
            raise MemoryError()

    def __dealloc__(self):
        pthread_cond_destroy(&self.freed)
        pthread_mutex_destroy(&self.mutex)

    cdef void _acquire(self) noexcept:
        while self.locked:
            # the holder lost the GIL inside its critical section (or let it
            # go in a system call): leave it the GIL until it releases the lock
            self.waiters += 1
            with nogil:
                pthread_mutex_lock(&self.mutex)
                while self.locked:
                    pthread_cond_wait(&self.freed, &self.mutex)
                pthread_mutex_unlock(&self.mutex)
            self.waiters -= 1
        self.locked = 1

    cdef int _release(self) except -1:
        if not self.locked:
            raise RuntimeError("release unlocked lock")
        if self.waiters:
            pthread_mutex_lock(&self.mutex)
            self.locked = 0
            pthread_cond_broadcast(&self.freed)
            pthread_mutex_unlock(&self.mutex)
        else:
            self.locked = 0
        return 0

    def acquire(self):
        self._acquire()
        return True

    def release(self):
        self._release()

    def __enter__(self):
        self._acquire()
        return True

    def __exit__(self, t, v, tb):
        self._release()
        return False


cdef class Poller:
    """An epoll instance that serving threads wait on one event at a time."""

    def __cinit__(self):
        self.epfd = -1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)

    def close(self):
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def fileno(self):
        return self.epfd

    cdef int _ctl(self, int op, int fd, unsigned int events) except -1:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = events
        ev.data.fd = fd
        if epoll_ctl(self.epfd, op, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    def register(self, int fd, unsigned int events):
        self._ctl(EPOLL_CTL_ADD, fd, events)

    def modify(self, int fd, unsigned int events):
        self._ctl(EPOLL_CTL_MOD, fd, events)

    def unregister(self, int fd):
        self._ctl(EPOLL_CTL_DEL, fd, 0)

    def poll_one(self, double timeout):
        """The fd of one ready event, or -1 after ``timeout`` seconds (or a
        signal). What is ready already is taken holding the GIL; only a
        wait lets it go."""
        # on this thread's stack: several threads wait on one Poller
        cdef epoll_event ev
        cdef int n
        cdef int ms = <int>(timeout * 1000) if timeout >= 0 else -1
        n = epoll_wait(self.epfd, &ev, 1, 0)
        if n == 0 and ms != 0:
            with nogil:
                n = epoll_wait(self.epfd, &ev, 1, ms)
        if n > 0:
            return ev.data.fd
        if n < 0 and errno != EINTR:
            PyErr_SetFromErrno(OSError)
        return -1


def recv_nowait(int fd, Py_ssize_t size):
    """What the socket holds, up to ``size`` bytes (at most 64 KiB), without
    waiting: bytes, b"" at the end of input, None when nothing is there."""
    cdef ssize_t n
    if size > _RECV_BUF:
        size = _RECV_BUF
    while True:
        n = recv(fd, _recv_buf, <size_t>size, MSG_DONTWAIT)
        if n >= 0:
            return PyBytes_FromStringAndSize(_recv_buf, n)
        if errno == EINTR:
            continue
        if errno == EAGAIN:   # == EWOULDBLOCK on Linux
            return None
        PyErr_SetFromErrno(OSError)
