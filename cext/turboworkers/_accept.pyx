# The accept layer's system calls: a SysV semaphore and an fcntl lock as
# cross-process accept mutexes, epoll with EPOLLEXCLUSIVE, and accept4.
#
# A wait returns False (or an empty list) when it timed out or a signal
# interrupted it, so the caller runs its signal handlers, beats its heartbeat
# and checks whether it should stop, then waits again.

from cpython.exc cimport PyErr_SetFromErrno, PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.errno cimport errno, EINTR, EAGAIN, EIDRM, EINVAL, EACCES, ECONNABORTED, EPROTO
from libc.string cimport memset
from posix.time cimport timespec, clock_gettime, nanosleep, CLOCK_MONOTONIC
from posix.unistd cimport close, write
from libc.stdint cimport uint64_t

from includes.sys_sem cimport (sembuf, semget, semop, semtimedop, semctl,
                               SEM_UNDO, SETVAL, GETVAL, GETNCNT,
                               IPC_PRIVATE, IPC_CREAT, IPC_RMID, IPC_NOWAIT)
from includes.sys_epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait,
                                 EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
                                 EPOLLIN, EPOLLEXCLUSIVE)
from includes.sys_accept cimport (sockaddr, sockaddr_storage, sockaddr_in, sockaddr_in6,
                                  sockaddr_un, socklen_t, accept4, inet_ntop, ntohs, ntohl,
                                  AF_INET, AF_INET6, AF_UNIX, SOCK_CLOEXEC, SOCK_NONBLOCK,
                                  INET6_ADDRSTRLEN, flock, fcntl, F_GETLK, F_SETLK, F_SETLKW,
                                  F_RDLCK, F_WRLCK, F_UNLCK, SEEK_SET)


cdef extern from *:
    """
    #include <errno.h>
    static inline void tw_set_errno(int e) { errno = e; }
    """
    void _set_errno "tw_set_errno"(int e) noexcept nogil


cdef extern from *:
    """
    static inline int tw_cas_int(int *p, int expected, int desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                           __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    static inline void tw_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline int tw_load_int(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    """
    bint _cas "tw_cas_int"(int *p, int expected, int desired) noexcept nogil
    void _store "tw_store_int"(int *p, int v) noexcept nogil
    int _load "tw_load_int"(int *p) noexcept nogil


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


cdef inline void _one_byte(flock *fl, short kind, long start) noexcept nogil:
    memset(fl, 0, sizeof(flock))
    fl.l_type = kind
    fl.l_whence = SEEK_SET
    fl.l_start = start
    fl.l_len = 1


cdef class FileLock:
    """A cross-process mutex on an open file descriptor.

    The mutex is a write lock on the file's first byte. A process about to
    wait for it may also hold a read lock on the second byte (shared, so any
    number of them), which says that somebody waits: the holder can see it
    with ``waited_for()``. The kernel drops both with the process.
    """

    def __init__(self, int fd):
        self.fd = fd

    cdef int _op(self, int cmd, short kind) noexcept nogil:
        return self._range(cmd, kind, 0)

    cdef int _range(self, int cmd, short kind, long start) noexcept nogil:
        cdef flock fl
        _one_byte(&fl, kind, start)
        return fcntl(self.fd, cmd, &fl)

    cdef int _other_lock(self, long start) noexcept nogil:
        # 1: another process holds a lock on that byte; 0: none; -1: error
        cdef flock fl
        _one_byte(&fl, F_WRLCK, start)
        if fcntl(self.fd, F_GETLK, &fl) < 0:
            return -1
        return fl.l_type != F_UNLCK

    cdef int _held_elsewhere(self) noexcept nogil:
        return self._other_lock(0)

    cdef int _waited_for(self) noexcept nogil:
        return self._other_lock(1)

    cdef int _wait_for_it(self) noexcept nogil:
        # F_SETLKW on the mutex, announced to the holder for the time of the
        # wait; errno is F_SETLKW's
        cdef int rc, err
        self._range(F_SETLK, F_RDLCK, 1)
        rc = self._op(F_SETLKW, F_WRLCK)
        err = errno
        self._range(F_SETLK, F_UNLCK, 1)
        _set_errno(err)
        return rc

    def held_elsewhere(self):
        """Whether another process holds the lock now."""
        cdef int rc = self._held_elsewhere()
        if rc < 0:
            PyErr_SetFromErrno(OSError)
        return rc == 1

    def waited_for(self):
        """Whether another process waits for the lock now (one that waits
        through ``acquire(True)`` or an accept round)."""
        cdef int rc = self._waited_for()
        if rc < 0:
            PyErr_SetFromErrno(OSError)
        return rc == 1

    def acquire(self, bint wait=True):
        """Take the lock; False when a signal interrupted the wait (or, with
        wait=False, when another process holds it)."""
        cdef int rc
        if wait:
            with nogil:
                rc = self._wait_for_it()
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


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef class AcceptRound:
    """The loop of a worker's accept thread, one round per call, every
    system call of it without the GIL: take the mutex (if any), wait for a
    listener, accept a batch, give the mutex back.

    The thread tells the event loop of the worker that connections wait by
    writing to an eventfd, and it does so at the start of the next round,
    after it has let the GIL go: the woken loop then finds the GIL free
    instead of blocking on it (one context switch less per batch).
    """

    def __cinit__(self, Epoll poller, int notify_fd, int capacity, int turn=1,
                  Semaphore sem=None, FileLock lock=None, double stuck_after=0.02,
                  int stop_fd=-1, double yield_max=0.05):
        self.poller = poller
        self.stop_fd = stop_fd
        self.sem = sem
        self.lock = lock
        self.has_mutex = sem is not None or lock is not None
        # without a mutex every round may accept: the turn never ends
        self.holding = not self.has_mutex
        self.turn = max(1, turn)
        self.turn_left = self.turn
        self.notify_fd = notify_fd
        self.notify_due = False
        self.pending = 0
        self.stuck_after = stuck_after
        self.handed_at = 0.0
        self.yield_due = False
        self.yield_max = yield_max
        self.capacity = capacity
        self.fds = <int *>PyMem_Malloc(sizeof(int) * capacity)
        self.lfds = <int *>PyMem_Malloc(sizeof(int) * capacity)
        self.addrs = <sockaddr_storage *>PyMem_Malloc(sizeof(sockaddr_storage) * capacity)
        self.addrlens = <socklen_t *>PyMem_Malloc(sizeof(socklen_t) * capacity)
        if self.fds == NULL or self.lfds == NULL or self.addrs == NULL or self.addrlens == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.fds)
        PyMem_Free(self.lfds)
        PyMem_Free(self.addrs)
        PyMem_Free(self.addrlens)

    def notify_next(self):
        """Wake the event loop at the start of the next round."""
        self.notify_due = True

    def flush(self):
        """Wake the event loop now if a round was to do it."""
        if self.notify_due:
            self.notify()

    def notify(self):
        """Wake the event loop now."""
        self.notify_due = False
        with nogil:
            self._notify()

    cdef void _notify(self) noexcept nogil:
        cdef uint64_t one = 1
        write(self.notify_fd, &one, sizeof(one))

    cdef int _take(self, timespec *ts) noexcept nogil:
        # 1: held; 0: timed out or interrupted; -1: error (errno)
        cdef sembuf op
        if self.sem is not None:
            op.sem_num = 0
            op.sem_op = -1
            op.sem_flg = SEM_UNDO
            if semtimedop(self.sem.semid, &op, 1, ts) == 0:
                return 1
            return 0 if errno == EAGAIN or errno == EINTR else -1
        if self.lock is not None:
            # no time limit, but every holder lets go within its wait
            if self.lock._wait_for_it() == 0:
                return 1
            return 0 if errno == EINTR else -1
        return 1

    cdef void _let_waiter_in(self) noexcept nogil:
        # An fcntl lock has no line of waiters: its release wakes every
        # process blocked on it and the first to run takes it. The releaser
        # is running already, so asking again at once takes the lock back
        # before any woken waiter has run (measured: the same process held
        # it again for 89% of the turns, with 4 processes), and a few
        # workers keep every turn. A semaphore hands itself to the first
        # waiter when released. So after a full turn, when a worker said it
        # waits (FileLock._wait_for_it), the releaser waits until another
        # process holds the lock (bounded by ``yield_max``, should that one
        # be stopped meanwhile) before it asks again: every woken worker
        # gets its chance, as with the semaphore's order of arrival. With
        # nobody waiting it asks again at once.
        cdef timespec pause
        cdef double deadline
        if self.lock._waited_for() != 1:
            return
        deadline = _now() + self.yield_max
        pause.tv_sec = 0
        pause.tv_nsec = 100000
        while self.lock._held_elsewhere() == 0 and _now() < deadline:
            nanosleep(&pause, NULL)

    cdef int _give_back(self) noexcept nogil:
        cdef sembuf op
        if self.sem is not None:
            op.sem_num = 0
            op.sem_op = 1
            op.sem_flg = SEM_UNDO
            return semop(self.sem.semid, &op, 1)
        if self.lock is not None:
            return self.lock._op(F_SETLK, F_UNLCK)
        return 0

    def give_back(self):
        """Let the mutex go, if this worker holds it (shedding, stopping)."""
        self.end_turn()

    # -- a turn handed to the event loop ------------------------------------
    #
    # The other way to use a round: the accept thread only waits for the
    # mutex (take), the event loop then waits for the listeners itself and
    # accepts while the turn lasts (accept_from), and whoever ends the turn
    # first lets the mutex go (end_turn). A connection then wakes the event
    # loop alone, not the thread and then the loop.

    def take(self, double wait):
        """Wait up to ``wait`` seconds for the mutex, without the GIL; True
        when held. The turn (``turn`` accepts) begins, and the event loop is
        woken (the notify fd) before the GIL is asked for again. OSError if
        the mutex failed (the semaphore was removed, say)."""
        cdef timespec ts
        cdef int rc
        if _load(&self.holding) == 1:
            return True
        _timespec(&ts, wait)
        with nogil:
            if self.yield_due:
                self.yield_due = False
                self._let_waiter_in()
            rc = self._take(&ts)
            if rc == 1:
                self.turn_left = self.turn
                self.turns += 1
                _store(&self.holding, 1)
                self._notify()
        if rc < 0:
            PyErr_SetFromErrno(OSError)
        return rc == 1

    def accept_from(self, int fd, int limit):
        """While this worker holds the turn: accept up to ``limit``
        connections, no more than the turn has left, from the non-blocking
        listener ``fd``. The GIL is kept: accept4 on a non-blocking socket
        does not wait. Returns ([(new fd, peer address), ...], errno of an
        accept error other than "nothing there", or 0)."""
        cdef int got = 0, nfd, err = 0, i
        if _load(&self.holding) != 1:
            return [], 0
        if limit > self.turn_left:
            limit = self.turn_left
        if limit > self.capacity:
            limit = self.capacity
        while got < limit:
            self.addrlens[got] = sizeof(sockaddr_storage)
            nfd = accept4(fd, <sockaddr *>&self.addrs[got], &self.addrlens[got],
                          SOCK_CLOEXEC | SOCK_NONBLOCK)
            if nfd < 0:
                if errno != EAGAIN and errno != EINTR and errno != ECONNABORTED \
                        and errno != EPROTO:
                    err = errno
                break
            self.fds[got] = nfd
            got += 1
        self.turn_left -= got
        self.accepted += got
        return ([(self.fds[i], _address(<sockaddr *>&self.addrs[i], self.addrlens[i]))
                 for i in range(got)], err)

    def end_turn(self):
        """Let the mutex go if this worker holds it; True when this call did.
        The event loop and the thread may both call it at once: one of them
        lets it go, never both.

        ``holding`` is 2 while the mutex is being let go, and 0 only once it
        is: an fcntl lock belongs to the process, so a take() that asked
        for it before the unlock would be granted at once, and the unlock
        would then take it away from the new turn."""
        cdef int rc = 0
        if not _cas(&self.holding, 1, 2):
            return False
        # fcntl: a turn that ended full lets a woken waiter in before this
        # worker asks again (see _let_waiter_in)
        self.yield_due = self.lock is not None and self.turn_left <= 0
        with nogil:
            rc = self._give_back()
            _store(&self.holding, 0)
        if rc < 0:
            PyErr_SetFromErrno(OSError)
        return True

    def round(self, int limit, double wait):
        """One round; returns (connections, accept errno, fatal errno, busy).
        connections: a list of (listener fd, new fd, peer address), empty
        when the mutex or the listeners did not come within ``wait``. accept
        errno: an accept error other than "nothing there" (EMFILE,
        ENOBUFS...: pause, then go on), or 0. fatal errno: the mutex or the
        epoll failed (the semaphore was removed, say: stop), or 0. busy: a
        listener was ready, but the event loop had not yet taken the last
        batch (``pending``, which it clears), so nothing was accepted and
        the turn went on. The connections are handed over in every case.

        With a mutex, a turn lasts ``turn`` accepts (over as many rounds as
        it takes), then the mutex goes to the next worker in line. A turn
        of one connection would cost the worker two wake-ups per connection
        (the mutex, then the listener) besides its event loop's; the
        hand-over is then paid once per ``turn`` connections, and idle
        workers still take turns in their order of arrival."""
        cdef timespec ts
        cdef int ms = <int>(wait * 1000) if wait >= 0 else -1
        cdef epoll_event *evs = <epoll_event *>self.poller.events
        cdef int n = 0, got = 0, i, fd, nfd, rc, err = 0, fatal = 0
        cdef bint due = self.notify_due
        cdef bint busy = False
        cdef bint stop = False
        if limit > self.capacity:
            limit = self.capacity
        self.notify_due = False
        _timespec(&ts, wait)
        with nogil:
            if due:
                self._notify()
            if not self.holding:
                if self.yield_due:
                    self.yield_due = False
                    self._let_waiter_in()
                rc = self._take(&ts)
                if rc == 1:
                    _store(&self.holding, 1)
                    self.turn_left = self.turn
                elif rc < 0:
                    fatal = errno
            if self.holding:
                if self.has_mutex and limit > self.turn_left:
                    limit = self.turn_left
                n = epoll_wait(self.poller.epfd, evs, self.poller.maxevents, ms)
                if n < 0:
                    if errno != EINTR:
                        fatal = errno
                    n = 0
                elif n > 0 and self.pending and _now() - self.handed_at > self.stuck_after:
                    # the event loop has not taken the last batch, handed
                    # over ``stuck_after`` seconds ago or more: it is stuck
                    # (in CPU-bound code, say). Pass the turn on rather than
                    # hoard connections others could serve now. (A batch
                    # handed over just now is simply not taken yet.)
                    n = 0
                    busy = True
                for i in range(n):
                    if evs[i].data.fd == self.stop_fd:
                        # the worker stops: nothing more is accepted, and
                        # the turn goes on to the others at once
                        stop = True
                        n = 0
                        busy = False
                for i in range(n):
                    fd = evs[i].data.fd
                    while got < limit:
                        self.addrlens[got] = sizeof(sockaddr_storage)
                        nfd = accept4(fd, <sockaddr *>&self.addrs[got], &self.addrlens[got],
                                      SOCK_CLOEXEC | SOCK_NONBLOCK)
                        if nfd < 0:
                            if errno != EAGAIN and errno != EINTR and \
                                    errno != ECONNABORTED and errno != EPROTO:
                                err = errno
                            break
                        self.fds[got] = nfd
                        self.lfds[got] = fd
                        got += 1
                if got:
                    self.pending = 1
                    self.handed_at = _now()
                if self.has_mutex:
                    self.turn_left -= got
                    # an idle holder lets go after ``wait``, so a worker
                    # blocked on the fcntl lock (no time limit there) sees
                    # a stop within that time
                    if busy or err or fatal or stop or self.turn_left <= 0 or n == 0:
                        _store(&self.holding, 0)
                        if self._give_back() < 0 and fatal == 0:
                            fatal = errno
                        self.yield_due = (self.lock is not None and self.turn_left <= 0
                                          and not (fatal or stop))
        return ([(self.lfds[i], self.fds[i],
                  _address(<sockaddr *>&self.addrs[i], self.addrlens[i]))
                 for i in range(got)], err, fatal, busy)
