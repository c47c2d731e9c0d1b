# The thread worker's epoll and its non-blocking reads: system calls that
# cannot block, made without letting the GIL go (see _poll.pyx).

from includes.sys_pthread cimport pthread_mutex_t, pthread_cond_t, pthread_t


cdef class Lock:
    cdef int locked                 # read and written holding the GIL
    cdef int waiters                # threads waiting for it without the GIL
    cdef pthread_mutex_t mutex      # for those waits
    cdef pthread_cond_t freed

    cdef void _acquire(self) noexcept
    cdef int _release(self) except -1


# Who waits for events when a Poller parks its idle threads (see _poll.pyx):
# shared by the serving threads and the watcher, a C thread that never takes
# the GIL. Fields marked (GIL) are written by threads holding the GIL and read
# by the watcher without a lock; the others are read and written under ``mutex``.
cdef struct Park:
    pthread_mutex_t mutex
    pthread_cond_t turn             # parked threads wait here for the leader's place
    pthread_t watcher
    int epfd
    int timerfd                     # the watcher's tick while no one waits in epoll_wait
    long tick_ns
    int leader                      # a thread waits in epoll_wait
    int parked                      # threads waiting on ``turn``
    int armed                       # the tick runs
    int closing
    int demote                      # the next serving thread back in poll_one parks
    unsigned long progress          # (GIL) poll_one calls
    int running                     # (GIL) threads serving an event they took
    unsigned long seen              # ``progress`` at the watcher's last look
    long long looked_ns             # when that was
    long long cpu_ns                # the process's CPU time then
    int stalls                      # looks in a row without progress
    int busy_looks                  # looks in a row with the GIL busy and several serving
    unsigned long promotions        # parked threads sent to epoll_wait by the watcher
    unsigned long demotions         # serving threads parked at the watcher's word
    unsigned long ticks             # times the watcher woke
    # the serving threads, one slot each: /proc/thread-self/stat, open, and
    # whether the thread serves now (GIL)
    int nslots
    int slots_used                  # (GIL)
    int *stat_fds
    int *serving


cdef class Poller:
    cdef readonly int epfd
    cdef Park *parking

    cdef int _ctl(self, int op, int fd, unsigned int events) except -1
    cdef void _stop_parking(self) noexcept
