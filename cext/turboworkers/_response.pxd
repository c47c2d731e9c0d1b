# The WSGI response writer: status line and headers, body framing and the
# socket writes of one HTTP/1.x response. Behaves like gunicorn 27's
# gunicorn.http.wsgi.Response; see response.pyx for the few places where it
# does less work for the same bytes.

from cpython.object cimport PyObject


# One piece of an outgoing gather write. `owner` is the bytes object whose
# buffer `ptr` points into, or NULL when `ptr` is C memory (a chunk-size line,
# a constant, the shared header buffer): such pieces are copied before any
# call that can let another thread run.
cdef struct Seg:
    const char *ptr
    Py_ssize_t len
    PyObject *owner


cdef class Response:
    # --- what gunicorn's Response exposes (access log, post_request, workers)
    cdef readonly object sock
    cdef readonly object method
    cdef readonly object request_version  # the request's (major, minor)
    cdef public object status           # the status string, None before start_response
    cdef public list headers            # [(name, value)] that will be sent, hop-by-hop removed
    cdef public bint headers_sent
    cdef public bint chunked
    cdef public bint must_close
    cdef public bint upgrade
    cdef public long long sent          # body bytes accepted by write(), as gunicorn counts them

    # --- the request (see reuse()) and configuration, fixed at construction
    cdef bint _req_should_close
    cdef bint _is_head
    cdef bint _can_sendfile             # cfg.sendfile is not False
    cdef bint _is_ssl
    cdef bint _uwsgi
    cdef bint _plain                    # a stdlib socket, not SSL: sendmsg through its fd
    cdef object _inner                  # None, or the attribute holding the socket whose fd it is
    cdef bint _ver_le_10                # version <= (1, 0)
    cdef bint _ver_lt_11                # version < (1, 1)
    cdef int _vmajor                    # single digits, or -1: render through Python
    cdef int _vminor

    # --- state set by start_response
    cdef object _response_length        # None or what int() returned for Content-Length
    cdef bint _has_rlen
    cdef long long _rlen                # _response_length clamped to a C long long
    cdef bint _has_status_code
    cdef int _status_code
    cdef bint _omits_body               # HEAD, 1xx, 204, 304
    cdef bint _omits_body_warned

    # bytes of the current gather write that reached the socket; read after
    # an exception to know whether the headers went out
    cdef Py_ssize_t _progress

    cdef int _begin(self, object version, object method, bint req_should_close) except -1
    cdef int _process_headers(self, object headers) except -1
    cdef int _set_response_length(self, object value) except -1
    cdef bint _should_close(self) except -1
    cdef bint _is_chunked(self)
    cdef int _warn_omitted(self) except -1
    cdef object _render_headers(self, Seg *seg)
    cdef object _render_headers_generic(self, str connection)
    cdef int _send(self, Seg *segs, Py_ssize_t n, int more) except -1
    cdef int _send_plain(self, Seg *segs, Py_ssize_t n, int more) except -1
    cdef int _send_stream(self, Seg *segs, Py_ssize_t n) except -1
    cdef int _sendall_piece(self, Seg *seg, Py_ssize_t off, int flags) except -1
    cdef int _send_headers(self, const char *tail, Py_ssize_t tail_len, int more) except -1
    cdef int _write(self, object data) except -1
    cdef int _write_list(self, object items) except -1
    cdef int _close(self) except -1
    cdef bint _sendfile(self, object respiter) except -1
