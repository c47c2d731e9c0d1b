# accept4(2), fcntl(2) record locks and the socket addresses accept4 fills in.

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    cdef struct sockaddr:
        sa_family_t sa_family

    cdef struct sockaddr_storage:
        sa_family_t ss_family

    int accept4(int sockfd, sockaddr *addr, socklen_t *addrlen, int flags)

    enum: AF_INET
    enum: AF_INET6
    enum: AF_UNIX
    enum: SOCK_CLOEXEC
    enum: SOCK_NONBLOCK


cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        unsigned int s_addr

    cdef struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr

    cdef struct in6_addr:
        unsigned char s6_addr[16]

    cdef struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id

    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)


cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    enum: INET6_ADDRSTRLEN


cdef extern from "<sys/un.h>" nogil:
    cdef struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[108]


cdef extern from "<fcntl.h>" nogil:
    cdef struct flock:
        short l_type
        short l_whence
        long l_start
        long l_len
        int l_pid

    int fcntl(int fd, int cmd, ...)

    enum: F_GETLK
    enum: F_SETLK
    enum: F_SETLKW
    enum: F_RDLCK
    enum: F_WRLCK
    enum: F_UNLCK
    enum: SEEK_SET
