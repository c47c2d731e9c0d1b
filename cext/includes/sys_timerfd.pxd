# timerfd_create(2): a timer read as a file descriptor.

from posix.time cimport timespec


cdef extern from "<sys/timerfd.h>" nogil:
    cdef struct itimerspec:
        timespec it_interval
        timespec it_value

    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)

    enum: TFD_CLOEXEC
    enum: TFD_NONBLOCK
