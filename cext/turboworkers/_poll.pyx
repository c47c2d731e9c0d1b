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
from libc.errno cimport errno, EINTR, EAGAIN, ETIMEDOUT
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from posix.time cimport timespec, clock_gettime, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID
from posix.fcntl cimport open, O_RDONLY, O_CLOEXEC
from posix.unistd cimport close, read, pread

from includes.sys_epoll cimport (epoll_event, epoll_create1, epoll_ctl, epoll_wait,
                                 EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD)
from includes.sys_socket cimport recv, MSG_DONTWAIT
from includes.sys_pthread cimport (pthread_mutex_init, pthread_mutex_destroy, pthread_mutex_lock,
                                   pthread_mutex_unlock, pthread_cond_init, pthread_cond_destroy,
                                   pthread_cond_wait, pthread_cond_timedwait, pthread_cond_signal,
                                   pthread_cond_broadcast, pthread_condattr_t, pthread_condattr_init,
                                   pthread_condattr_destroy, pthread_condattr_setclock,
                                   pthread_create, pthread_join)
from includes.sys_timerfd cimport itimerspec, timerfd_create, timerfd_settime, TFD_CLOEXEC

# recv_nowait reads here, then copies what came: it never lets the GIL go,
# so one buffer serves every thread of the process.
cdef enum:
    _RECV_BUF = 65536
cdef char _recv_buf[_RECV_BUF]

# looks of the watcher without a thread coming back to poll_one after which
# a parked thread is sent to wait for events even though the GIL is busy:
# one long request then shares the GIL instead of holding up every
# connection
cdef enum:
    _STALL_LOOKS = 3


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


cdef extern from *:
    """
    /* Fields marked (GIL) in Park are written only by threads holding the
       GIL and read by the watcher without it: relaxed atomics, plain moves
       on x86. */
    static inline unsigned long tw_load_relaxed(unsigned long *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void tw_bump_relaxed(unsigned long *p) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    }
    static inline int tw_load_int(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void tw_store_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void tw_set_errno(int e) { errno = e; }
    /* this thread's slot in the Park it polls (see _slot) */
    static __thread void *tw_slot_park;
    static __thread int tw_slot;
    static inline void *tw_get_slot_park(void) { return tw_slot_park; }
    static inline int tw_get_slot(void) { return tw_slot; }
    static inline void tw_set_slot(void *park, int slot) { tw_slot_park = park; tw_slot = slot; }
    """
    void tw_set_errno(int e) nogil
    unsigned long tw_load_relaxed(unsigned long *p) nogil
    void tw_bump_relaxed(unsigned long *p) nogil
    int tw_load_int(int *p) nogil
    void tw_store_int(int *p, int v) nogil
    void *tw_get_slot_park() nogil
    int tw_get_slot() nogil
    void tw_set_slot(void *park, int slot) nogil


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN


cdef inline long long _clock_ns(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline long long _now_ns() noexcept nogil:
    return _clock_ns(CLOCK_MONOTONIC)


cdef void _set_tick(Park *p, long ns) noexcept nogil:
    # a periodic tick of ``ns`` (0 stops it)
    cdef itimerspec spec
    memset(&spec, 0, sizeof(spec))
    spec.it_value.tv_sec = ns // 1000000000
    spec.it_value.tv_nsec = ns % 1000000000
    spec.it_interval = spec.it_value
    timerfd_settime(p.timerfd, 0, &spec, NULL)


cdef void _start_looking(Park *p) noexcept nogil:
    # with the mutex: the tick starts (or restarts) from here
    p.seen = tw_load_relaxed(&p.progress)
    p.looked_ns = _now_ns()
    p.cpu_ns = _clock_ns(CLOCK_PROCESS_CPUTIME_ID)
    p.stalls = 0
    p.busy_looks = 0
    if not p.armed:
        _set_tick(p, p.tick_ns)
        p.armed = 1


cdef void _stop_looking(Park *p) noexcept nogil:
    # with the mutex
    if p.armed:
        _set_tick(p, 0)
        p.armed = 0
    p.demote = 0


cdef int _park_wait(Park *p, epoll_event *ev, int ms, bint demoted) noexcept nogil:
    """Wait for one event as the leader, or parked until the leader's place
    is free. The result of epoll_wait (errno kept), 0 at the timeout. A
    ``demoted`` thread parks first, if the watcher still wants it to."""
    cdef timespec deadline
    cdef long long end_ns = 0, left
    cdef int n = 0, err = 0, rc, wait_ms = ms
    if ms >= 0:
        end_ns = _now_ns() + <long long>ms * 1000000
        deadline.tv_sec = end_ns // 1000000000
        deadline.tv_nsec = end_ns % 1000000000
    pthread_mutex_lock(&p.mutex)
    if demoted:
        if p.demote:
            p.demote = 0
            p.demotions += 1
        else:
            demoted = False
    while not p.closing:
        if not p.leader and not demoted:
            p.leader = 1
            # someone waits for events again: no tick is needed
            _stop_looking(p)
            pthread_mutex_unlock(&p.mutex)
            if ms >= 0:
                left = end_ns - _now_ns()
                wait_ms = <int>((left + 999999) // 1000000) if left > 0 else 0
            n = epoll_wait(p.epfd, ev, 1, wait_ms)
            err = errno
            pthread_mutex_lock(&p.mutex)
            p.leader = 0
            if n > 0 and (p.parked or tw_load_int(&p.running) > 0):
                # This thread leaves epoll_wait to serve and no one takes its
                # place: the watcher looks at each tick whether a parked
                # thread should, or (with others serving) one of them park.
                _start_looking(p)
            break
        demoted = False
        p.parked += 1
        if ms < 0:
            rc = pthread_cond_wait(&p.turn, &p.mutex)
        else:
            rc = pthread_cond_timedwait(&p.turn, &p.mutex, &deadline)
        p.parked -= 1
        if rc == ETIMEDOUT:
            break
    pthread_mutex_unlock(&p.mutex)
    tw_set_errno(err)
    return n


cdef int _slot(Park *p) noexcept:
    """This thread's slot, taken at its first poll_one (holding the GIL);
    -1 when there is none (more threads than slots, or no /proc)."""
    cdef int slot, fd
    if tw_get_slot_park() == <void *>p and tw_get_slot() < p.slots_used:
        # (a Park freed and another made at its address finds its slots
        # taken anew: the index is checked against this one's)
        return tw_get_slot()
    slot = -1
    if p.slots_used < p.nslots:
        fd = open("/proc/thread-self/stat", O_RDONLY | O_CLOEXEC)
        if fd >= 0:
            slot = p.slots_used
            p.stat_fds[slot] = fd
            p.slots_used += 1
    tw_set_slot(<void *>p, slot)
    return slot


cdef bint _serving_thread_runs(Park *p) noexcept nogil:
    """Whether a serving thread is running or runnable (state R): holding
    the GIL, or about to take it. A serving thread blocked in the
    application, or waiting for the GIL, is asleep (S or D)."""
    cdef char buf[128]
    cdef ssize_t n
    cdef int i, j
    cdef int used = tw_load_int(&p.slots_used)
    for i in range(used):
        if not tw_load_int(&p.serving[i]):
            continue
        n = pread(p.stat_fds[i], buf, sizeof(buf) - 1, 0)
        if n <= 0:
            return True     # cannot tell: assume it runs
        # "tid (comm) S ...": the state follows the last ")"
        j = <int>n - 1
        while j > 0 and buf[j] != b')':
            j -= 1
        if j + 2 < n and buf[j + 2] == b'R':
            return True
    return False


cdef bint _events_ready(int epfd) noexcept nogil:
    # an epoll instance polls readable while events wait in it; polling it
    # takes none of them
    cdef pollfd pfd
    pfd.fd = epfd
    pfd.events = POLLIN
    pfd.revents = 0
    return poll(&pfd, 1, 0) > 0


cdef void _look(Park *p) noexcept nogil:
    """One look of the watcher, with the mutex held, while no thread waits in
    epoll_wait, and some are parked or several serve.

    The process's CPU time over the tick says whether the GIL was busy (a
    thread was running Python: more threads would only queue for it); the
    scheduler's state of the serving threads whether they are all blocked
    (in the application: a parked thread can serve what waits)."""
    cdef long long now = _now_ns()
    cdef long long wall = now - p.looked_ns
    cdef long long cpu, used
    cdef unsigned long progress
    cdef bint stalled, busy
    if wall < p.tick_ns - p.tick_ns // 4:
        return      # an expiration of a tick restarted since: too early to judge
    cpu = _clock_ns(CLOCK_PROCESS_CPUTIME_ID)
    used = cpu - p.cpu_ns
    progress = tw_load_relaxed(&p.progress)
    stalled = progress == p.seen
    p.stalls = p.stalls + 1 if stalled else 0
    p.seen = progress
    p.looked_ns = now
    p.cpu_ns = cpu
    busy = used * 10 >= wall * 7
    if p.parked and (p.stalls >= _STALL_LOOKS or (
            (stalled or _events_ready(p.epfd)) and not _serving_thread_runs(p))):
        # Every serving thread is blocked (none runs or waits to run, which
        # a process only slowed down by the CPU's other work would show),
        # or one request has held the GIL for several ticks: one more
        # thread waits for events.
        p.promotions += 1
        p.stalls = 0
        pthread_cond_signal(&p.turn)
    if busy and tw_load_int(&p.running) > 1:
        # several threads with a connection each take turns at a busy GIL,
        # each waiting up to the switch interval: one of them parks
        p.busy_looks += 1
        if p.busy_looks >= 2:
            p.demote = 1
            p.busy_looks = 0
    else:
        p.busy_looks = 0


cdef void *_watch(void *arg) noexcept nogil:
    """The watcher: a C thread that looks at each tick whether a parked
    thread should wait for events, or a serving one park (see _look)."""
    cdef Park *p = <Park *>arg
    cdef uint64_t expirations
    while True:
        if read(p.timerfd, &expirations, sizeof(expirations)) < 0:
            if errno == EINTR or errno == EAGAIN:
                continue
            break
        pthread_mutex_lock(&p.mutex)
        if p.closing:
            pthread_mutex_unlock(&p.mutex)
            break
        p.ticks += 1
        if p.armed:
            if p.leader or (not p.parked and tw_load_int(&p.running) <= 1):
                _stop_looking(p)
            else:
                _look(p)
        pthread_mutex_unlock(&p.mutex)
    return NULL


cdef void _free_park(Park *p) noexcept:
    free(p.stat_fds)
    free(p.serving)
    free(p)


cdef class Poller:
    """An epoll instance that serving threads wait on one event at a time.

    With ``park(tick)``, at most one idle thread waits in epoll_wait (the
    leader); the others are parked. A thread that takes an event leaves the
    leader's place empty, and serves its connection and then whatever is
    ready next, holding the GIL throughout. A second thread is sent to
    epoll_wait only when no thread came back for a next event for a whole
    tick: the serving threads are then blocked (in the application, a
    database call, a sleep) or on a long request.

    Without this, every idle thread waits in epoll_wait, each takes an event
    as it comes, and all then queue for the GIL with a connection in hand:
    CPython hands the GIL over at its switch interval (5 ms), to one waiter
    at a time and in no set order, so under load a connection could wait
    for a hundred milliseconds behind a thread that never got its turn.
    """

    def __cinit__(self):
        self.epfd = -1
        self.parking = NULL
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        self._stop_parking()
        if self.parking != NULL:
            pthread_cond_destroy(&self.parking.turn)
            pthread_mutex_destroy(&self.parking.mutex)
            _free_park(self.parking)
            self.parking = NULL
        if self.epfd >= 0:
            close(self.epfd)

    def close(self):
        self._stop_parking()
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def fileno(self):
        return self.epfd

    def park(self, double tick, int threads):
        """Park idle threads beyond the one waiting in epoll_wait; the
        watcher looks every ``tick`` seconds whether one more should wait
        (see _look). ``threads``: how many threads will call poll_one.
        Once per Poller."""
        cdef Park *p
        cdef int i
        if self.parking != NULL:
            raise RuntimeError("this Poller parks its threads already")
        if not 0 < tick < 1:
            raise ValueError("tick must be between 0 and 1 second")
        p = <Park *>calloc(1, sizeof(Park))
        if p == NULL:
            raise MemoryError()
        if threads < 1:
            raise ValueError("threads must be at least 1")
        p.epfd = self.epfd
        p.tick_ns = <long>(tick * 1e9)
        p.nslots = threads
        p.stat_fds = <int *>calloc(threads, sizeof(int))
        p.serving = <int *>calloc(threads, sizeof(int))
        if p.stat_fds == NULL or p.serving == NULL:
            free(p.stat_fds)
            free(p.serving)
            free(p)
            raise MemoryError()
        p.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)
        if p.timerfd < 0:
            _free_park(p)
            PyErr_SetFromErrno(OSError)
        cdef pthread_condattr_t attr
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        if pthread_mutex_init(&p.mutex, NULL) != 0 or pthread_cond_init(&p.turn, &attr) != 0:
            pthread_condattr_destroy(&attr)
            close(p.timerfd)
            _free_park(p)
            raise MemoryError()
        pthread_condattr_destroy(&attr)
        if pthread_create(&p.watcher, NULL, _watch, p) != 0:
            close(p.timerfd)
            pthread_cond_destroy(&p.turn)
            pthread_mutex_destroy(&p.mutex)
            _free_park(p)
            raise OSError("cannot start the watcher thread")
        self.parking = p

    cdef void _stop_parking(self) noexcept:
        # Wakes the parked threads (they return as at a timeout) and ends the
        # watcher. The struct itself is freed with the Poller, once no
        # thread can be inside poll_one.
        cdef Park *p = self.parking
        cdef int i
        if p == NULL or p.closing:
            return
        with nogil:
            pthread_mutex_lock(&p.mutex)
            p.closing = 1
            pthread_cond_broadcast(&p.turn)
            _set_tick(p, 1)
            pthread_mutex_unlock(&p.mutex)
            pthread_join(p.watcher, NULL)
            close(p.timerfd)
            for i in range(p.slots_used):
                close(p.stat_fds[i])
            p.slots_used = 0

    @property
    def parked(self):
        """Threads parked now (0 without park())."""
        return self.parking.parked if self.parking != NULL else 0

    @property
    def ticks(self):
        """Times the watcher woke."""
        return self.parking.ticks if self.parking != NULL else 0

    @property
    def demotions(self):
        """Times a serving thread parked at the watcher's word."""
        return self.parking.demotions if self.parking != NULL else 0

    @property
    def promotions(self):
        """Times the watcher sent a parked thread to wait for events."""
        return self.parking.promotions if self.parking != NULL else 0

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
        cdef Park *p = self.parking
        cdef bint demoted = False
        cdef int slot = -1
        if p != NULL:
            tw_bump_relaxed(&p.progress)
            slot = _slot(p)
            if slot >= 0 and p.serving[slot]:
                tw_store_int(&p.serving[slot], 0)
                tw_store_int(&p.running, p.running - 1)
                # the watcher asked one serving thread to park, and others
                # still serve: this one, unless it waits with no timeout
                demoted = tw_load_int(&p.demote) and p.running > 0 and ms > 0
        if demoted:
            n = 0
        else:
            n = epoll_wait(self.epfd, &ev, 1, 0)
        if n == 0 and ms != 0:
            if p != NULL and not p.closing:
                with nogil:
                    n = _park_wait(p, &ev, ms, demoted)
            else:
                with nogil:
                    n = epoll_wait(self.epfd, &ev, 1, ms)
        if n > 0:
            if slot >= 0:
                tw_store_int(&p.serving[slot], 1)
                tw_store_int(&p.running, p.running + 1)
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
