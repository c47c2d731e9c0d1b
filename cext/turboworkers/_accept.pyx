# The accept layer's system calls: a SysV semaphore and an fcntl lock as
# cross-process accept mutexes, epoll with EPOLLEXCLUSIVE, and accept4.
#
# A wait returns False (or an empty list) when it timed out or a signal
# interrupted it, so the caller runs its signal handlers, beats its heartbeat
# and checks whether it should stop, then waits again.

from cpython.exc cimport PyErr_SetFromErrno, PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.errno cimport errno, EINTR, EAGAIN, EIDRM, EINVAL, EACCES
from libc.string cimport memset
from posix.time cimport timespec
from posix.unistd cimport close

from includes.sys_sem cimport (sembuf, semget, semop, semtimedop, semctl,
                               SEM_UNDO, SETVAL, GETVAL, GETNCNT,
                               IPC_PRIVATE, IPC_CREAT, IPC_RMID, IPC_NOWAIT)
from includes.sys_epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait,
                                 EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
                                 EPOLLIN, EPOLLEXCLUSIVE)
from includes.sys_accept cimport (sockaddr, sockaddr_storage, sockaddr_in, sockaddr_in6,
                                  sockaddr_un, socklen_t, accept4, inet_ntop, ntohs, ntohl,
                                  AF_INET, AF_INET6, AF_UNIX, SOCK_CLOEXEC, SOCK_NONBLOCK,
                                  INET6_ADDRSTRLEN, flock, fcntl, F_SETLK, F_SETLKW,
                                  F_WRLCK, F_UNLCK, SEEK_SET)


cdef inline void _timespec(timespec *ts, double seconds) noexcept nogil:
    if seconds < 0:
        seconds = 0
    ts.tv_sec = <long>seconds
    ts.tv_nsec = <long>((seconds - <double>ts.tv_sec) * 1e9)


cdef class Semaphore:
    """A cross-process mutex; waiters are served in the order they came."""

    def __init__(self, int semid):
        self.semid = semid

    @staticmethod
    def create():
        """Make a new semaphore of value 1 (in the master)."""
        cdef int semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
        if semid < 0:
            PyErr_SetFromErrno(OSError)
        if semctl(semid, 0, SETVAL, <int>1) < 0:
            PyErr_SetFromErrno(OSError)
        return Semaphore(semid)

    def acquire(self, double timeout):
        """Wait up to timeout seconds; False on time-out or a signal."""
        cdef sembuf op
        cdef timespec ts
        cdef int rc
        op.sem_num = 0
        op.sem_op = -1
        op.sem_flg = SEM_UNDO
        _timespec(&ts, timeout)
        with nogil:
            rc = semtimedop(self.semid, &op, 1, &ts)
        if rc == 0:
            self.held = True
            return True
        if errno == EAGAIN or errno == EINTR:
            return False
        PyErr_SetFromErrno(OSError)

    def try_acquire(self):
        cdef sembuf op
        op.sem_num = 0
        op.sem_op = -1
        op.sem_flg = SEM_UNDO | IPC_NOWAIT
        if semop(self.semid, &op, 1) == 0:
            self.held = True
            return True
        if errno == EAGAIN or errno == EINTR:
            return False
        PyErr_SetFromErrno(OSError)

    def release(self):
        cdef sembuf op
        if not self.held:
            return
        op.sem_num = 0
        op.sem_op = 1
        op.sem_flg = SEM_UNDO
        self.held = False
        if semop(self.semid, &op, 1) < 0:
            PyErr_SetFromErrno(OSError)

    def value(self):
        cdef int v = semctl(self.semid, 0, GETVAL)
        if v < 0:
            PyErr_SetFromErrno(OSError)
        return v

    def waiting(self):
        """How many processes wait for it."""
        cdef int v = semctl(self.semid, 0, GETNCNT)
        if v < 0:
            PyErr_SetFromErrno(OSError)
        return v

    def remove(self):
        """Delete the semaphore (in the master, at exit)."""
        if semctl(self.semid, 0, IPC_RMID) < 0 and errno != EINVAL and errno != EIDRM:
            PyErr_SetFromErrno(OSError)


cdef class FileLock:
    """A cross-process mutex on an open file descriptor."""

    def __init__(self, int fd):
        self.fd = fd

    cdef int _op(self, int cmd, short kind) noexcept nogil:
        cdef flock fl
        memset(&fl, 0, sizeof(fl))
        fl.l_type = kind
        fl.l_whence = SEEK_SET
        return fcntl(self.fd, cmd, &fl)

    def acquire(self, bint wait=True):
        """Take the lock; False when a signal interrupted the wait (or, with
        wait=False, when another process holds it)."""
        cdef int rc
        if wait:
            with nogil:
                rc = self._op(F_SETLKW, F_WRLCK)
        else:
            rc = self._op(F_SETLK, F_WRLCK)
        if rc == 0:
            self.held = True
            return True
        if errno == EINTR or errno == EAGAIN or errno == EACCES:
            return False
        PyErr_SetFromErrno(OSError)

    def release(self):
        if not self.held:
            return
        self.held = False
        if self._op(F_SETLK, F_UNLCK) < 0:
            PyErr_SetFromErrno(OSError)


cdef class Epoll:
    """An epoll instance for listeners, which may be registered exclusive."""

    def __cinit__(self, int maxevents=64):
        self.epfd = -1
        self.maxevents = maxevents
        self.events = PyMem_Malloc(sizeof(epoll_event) * maxevents)
        if self.events == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        PyMem_Free(self.events)

    def close(self):
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def register(self, int fd, bint exclusive=False):
        """Watch fd for input; exclusive: wake one waiting epoll, not all."""
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = EPOLLIN | (EPOLLEXCLUSIVE if exclusive else 0)
        ev.data.fd = fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)

    def unregister(self, int fd):
        if epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL) < 0:
            PyErr_SetFromErrno(OSError)

    def wait(self, double timeout):
        """The ready fds; [] on time-out or a signal."""
        cdef int n, i
        cdef int ms = <int>(timeout * 1000) if timeout >= 0 else -1
        cdef epoll_event *evs = <epoll_event *>self.events
        with nogil:
            n = epoll_wait(self.epfd, evs, self.maxevents, ms)
        if n < 0:
            if errno == EINTR:
                return []
            PyErr_SetFromErrno(OSError)
        return [evs[i].data.fd for i in range(n)]


def accept_fd(int fd, bint nonblocking=False):
    """accept4() with SOCK_CLOEXEC: (new fd, peer address as Python gives it),
    or None when nothing is waiting or a signal came."""
    cdef sockaddr_storage ss
    cdef socklen_t sl = sizeof(ss)
    cdef int nfd
    with nogil:
        nfd = accept4(fd, <sockaddr *>&ss, &sl,
                      SOCK_CLOEXEC | (SOCK_NONBLOCK if nonblocking else 0))
    if nfd < 0:
        if errno == EAGAIN or errno == EINTR:  # EWOULDBLOCK is EAGAIN on Linux
            return None
        PyErr_SetFromErrno(OSError)
    return nfd, _address(<sockaddr *>&ss, sl)


cdef object _address(sockaddr *sa, socklen_t sl):
    cdef char buf[INET6_ADDRSTRLEN + 1]
    cdef sockaddr_in *a4
    cdef sockaddr_in6 *a6
    cdef sockaddr_un *un
    cdef Py_ssize_t n
    if sa.sa_family == AF_INET:
        a4 = <sockaddr_in *>sa
        inet_ntop(AF_INET, &a4.sin_addr, buf, sizeof(buf))
        return ((<bytes>buf).decode("ascii"), ntohs(a4.sin_port))
    if sa.sa_family == AF_INET6:
        a6 = <sockaddr_in6 *>sa
        inet_ntop(AF_INET6, &a6.sin6_addr, buf, sizeof(buf))
        return ((<bytes>buf).decode("ascii"), ntohs(a6.sin6_port),
                ntohl(a6.sin6_flowinfo), a6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        un = <sockaddr_un *>sa
        n = <Py_ssize_t>sl - 2
        if n <= 0:
            return ""
        if un.sun_path[0] == 0:
            return (<char *>un.sun_path)[:n]
        return (<bytes>un.sun_path).decode("utf-8", "surrogateescape")
    return None
