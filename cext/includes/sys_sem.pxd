# System V semaphores (semget(2), semop(2), semtimedop(2), semctl(2)).

from posix.time cimport timespec


cdef extern from "<sys/sem.h>" nogil:

    cdef struct sembuf:
        unsigned short sem_num
        short sem_op
        short sem_flg

    int semget(int key, int nsems, int semflg)
    int semop(int semid, sembuf *sops, size_t nsops)
    int semtimedop(int semid, sembuf *sops, size_t nsops, const timespec *timeout)
    int semctl(int semid, int semnum, int cmd, ...)

    enum: SEM_UNDO
    enum: SETVAL
    enum: GETVAL
    enum: GETNCNT


cdef extern from "<sys/ipc.h>" nogil:
    enum: IPC_PRIVATE
    enum: IPC_CREAT
    enum: IPC_RMID
    enum: IPC_NOWAIT
