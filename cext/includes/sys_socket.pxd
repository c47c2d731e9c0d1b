# sendmsg(2), recv(2) and the flags the response writer and the poller pass to them.
# posix.uio (shipped with Cython) already declares struct iovec.

from posix.uio cimport iovec


cdef extern from "<sys/socket.h>" nogil:

    ctypedef unsigned int socklen_t

    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    ssize_t sendmsg(int sockfd, const msghdr *msg, int flags)
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)

    enum: MSG_DONTWAIT
    enum: MSG_NOSIGNAL
    enum: MSG_MORE
