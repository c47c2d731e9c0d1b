# A fine tick for GeventMutexWorker's event loop while requests are in flight.
#
# libev, gevent's default loop, gives epoll_wait its timeout in whole
# milliseconds, rounded up, and never less than one millisecond. When only
# timers are pending, a timer due in 0.2 ms fires 1 to 2 ms late, and the
# loop sits idle meanwhile. Under load with many requests waiting on timers
# (gevent.sleep, a socket timeout) the worker then idles while work is due:
# with 500 connections whose requests each sleep 10 ms, one worker spent
# 16-20% of its time in such waits, its CPU at 80%, and throughput fell short
# by as much. A timerfd that the loop watches, firing every ``interval`` while
# requests are in flight, ends each such wait within the interval: libev then
# runs the timers that fell due.
#
# The tick is switched on and off just before the loop would wait (a libev
# prepare watcher): on when a request is in flight then (it waits on
# something), off when none is. A request that runs start to end within one
# pass of the loop (hello world) never switches it on, and an idle worker is
# not woken.

from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdint cimport uint64_t
from cpython.exc cimport PyErr_SetFromErrno
from posix.time cimport timespec, CLOCK_MONOTONIC
from posix.unistd cimport close, read

from includes.sys_timerfd cimport (itimerspec, timerfd_create, timerfd_settime,
                                   TFD_CLOEXEC, TFD_NONBLOCK)


cdef class Tick:
    """A periodic timerfd, armed while the event loop waits with requests in
    flight.

    The worker calls ``begin()`` as a request starts and ``end()`` when it is
    over; the event loop calls ``prepare()`` before each wait (a prepare
    watcher) and ``fire()`` when ``fileno()`` is readable. Not thread-safe:
    one event loop's thread uses it.
    """

    def __cinit__(self, double interval):
        self.fd = -1
        if not (interval > 0 and interval < 1):
            raise ValueError("Tick interval must be between 0 and 1 second, not %r" % interval)
        self.interval_ns = <long>(interval * 1e9)
        if self.interval_ns < 1000:
            raise ValueError("Tick interval must be at least 1 microsecond, not %r" % interval)
        self.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            PyErr_SetFromErrno(OSError)

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)

    def fileno(self):
        return self.fd

    cdef int _set(self, long ns) except -1:
        # ns > 0: fire every ns from now; 0: stop
        cdef itimerspec spec
        spec.it_interval.tv_sec = 0
        spec.it_interval.tv_nsec = ns
        spec.it_value.tv_sec = 0
        spec.it_value.tv_nsec = ns
        if self.fd < 0:
            return 0
        if timerfd_settime(self.fd, 0, &spec, NULL) < 0:
            PyErr_SetFromErrno(OSError)
        self.armed = ns > 0
        return 0

    cpdef begin(self):
        """A request starts."""
        self.active += 1

    cpdef end(self):
        """A request is over (its every ``begin()`` needs one ``end()``)."""
        if self.active > 0:
            self.active -= 1

    def prepare(self):
        """The loop is about to wait: tick while requests are in flight."""
        if self.active > 0:
            if not self.armed:
                self._set(self.interval_ns)
        elif self.armed:
            self._set(0)

    def fire(self):
        """The loop saw the timerfd readable: take the expirations."""
        cdef uint64_t n
        if self.fd < 0:
            return
        if read(self.fd, &n, sizeof(n)) < 0 and errno != EAGAIN and errno != EINTR:
            PyErr_SetFromErrno(OSError)
        self.fired += 1

    def close(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
            self.armed = False
