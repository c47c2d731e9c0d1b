# pthread(7) mutexes, for locks taken without the GIL.

from posix.time cimport timespec


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass

    int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_timedlock(pthread_mutex_t *mutex, const timespec *abstime)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)
