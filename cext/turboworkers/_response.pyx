"""The WSGI response writer of turboworkers.

The wire behaviour is gunicorn 27's ``gunicorn.http.wsgi.Response``: the same
validation, the same framing, the same bytes apart from the Date value.  What
differs is the cost of producing them:

* the status line and headers are rendered straight into one C buffer (a
  shared static one, or a fresh bytes object when they do not fit), never as
  a list of formatted strings;
* ``Server:``/``Date:`` are rendered once per second;
* the first body write carries the headers, ``write_list`` sends a whole
  list or tuple body, and ``close`` the last chunk, in one gather write;
* on a plain socket the gather write is a non-blocking ``sendmsg`` holding
  the GIL; whatever the kernel does not take at once goes through the
  socket's own ``sendall``, which honours its timeout and releases the GIL
  while it blocks.  SSL, gevent and other socket-likes only ever see
  ``sendall`` (and ``sendfile``), with the pieces joined first.
"""

cimport cython
from cpython.bytes cimport (PyBytes_Check, PyBytes_AS_STRING, PyBytes_GET_SIZE,
                            PyBytes_FromStringAndSize)
from cpython.unicode cimport (PyUnicode_CheckExact, PyUnicode_KIND,
                              PyUnicode_1BYTE_KIND, PyUnicode_1BYTE_DATA,
                              PyUnicode_GET_LENGTH, PyUnicode_Substring)
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.list cimport PyList_CheckExact, PyList_GET_SIZE, PyList_GET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EINTR, EAGAIN
from libc.math cimport floor
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.stdio cimport snprintf
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from posix.uio cimport iovec

from includes.sys_socket cimport (msghdr, sendmsg, MSG_DONTWAIT, MSG_NOSIGNAL,
                                  MSG_MORE)

import io
import logging
import os
import re
import socket as _socket_mod
import _socket

import gunicorn.http.wsgi as _gwsgi
from gunicorn.http.errors import InvalidResponseHeader, InvalidResponseHeaderName

__all__ = ["Response", "http_date", "live_objects"]

# Responses made and freed in this process (leak tests, leak benchmark):
# plain C counters under the GIL, see _http_parser.live_objects.
cdef Py_ssize_t _made_responses = 0
cdef Py_ssize_t _freed_responses = 0


def live_objects():
    """{"Response": {"made": n, "freed": m}} since this module was imported."""
    return {"Response": {"made": _made_responses, "freed": _freed_responses}}


cdef enum:
    # Status line and headers up to this size are rendered into a static
    # buffer, so a common response allocates nothing for them.
    _HBUF_SIZE = 8192
    # Linux allows 1024 iovecs per call; fewer keeps the array on the stack.
    _IOV_BATCH = 256
    # On socket-likes (SSL, gevent) pieces are joined before sendall; a body
    # piece this large is sent on its own instead of being copied.
    _JOIN_LIMIT = 262144
    # write_list keeps up to this many items' segments on the stack.
    _STACK_ITEMS = 16
    # "%X\r\n" of a size_t
    _CHUNK_LINE_MAX = 20

    HK_NORMAL = 0
    HK_CONTENT_LENGTH = 1
    HK_CONNECTION = 2
    HK_UPGRADE = 3
    HK_HOP = 4


# The message gunicorn logs when an application sends body bytes on a
# response that must not have a body; kept identical so log filters match.
cdef str _OMIT_MSG = ("WSGI app sent body bytes on a no-body response "
                      "(method=%s status=%s); dropping per RFC 9110.")
cdef object _log = logging.getLogger("gunicorn.http.wsgi")

cdef char _hbuf[_HBUF_SIZE]
cdef const char *_HEX = b"0123456789ABCDEF"
cdef const char *_WDAYS = b"SunMonTueWedThuFriSat"
cdef const char *_MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"

# RFC 9110 tchar, and field-vchar / SP / HTAB (which is also what gunicorn
# allows after "NNN " in a status): one lookup per character.
cdef unsigned char _TCHAR[256]
cdef unsigned char _VCHAR[256]


cdef void _init_tables() noexcept:
    cdef int c
    cdef bytes specials = b"!#$%&'*+-.^_`|~"
    memset(_TCHAR, 0, 256)
    for c in range(256):
        _VCHAR[c] = (c == 9 or (c >= 0x20 and c != 0x7f))
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
            _TCHAR[c] = 1
    for c in specials:
        _TCHAR[c] = 1


_init_tables()


# Only for the error a non-str argument raises, so it reads exactly as the
# one the regular-expression check in gunicorn raises.
_TOKEN_PY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# `name, value = item` compiled by CPython: its errors for a malformed header
# item ("not enough values to unpack (expected 2, got 1)", ...) differ from
# the ones Cython generates for the same statement.
_ns = {}
exec("def unpack2(item):\n    a, b = item\n    return a, b\n", _ns)
cdef object _unpack2 = _ns["unpack2"]
del _ns


def _find_plain_socket():
    # The stdlib class even when gevent has patched the socket module first:
    # its sockets must keep going through their own cooperative sendall.
    cls = _socket_mod.socket
    if isinstance(cls, type) and issubclass(cls, _socket.socket):
        return cls
    try:
        from gevent.monkey import get_original
        return get_original("socket", "socket")
    except Exception:
        return None


cdef object _PLAIN_SOCKET = _find_plain_socket()
# Cooperative socket classes (gevent's) written to the same way: a
# non-blocking sendmsg on the descriptor first, their own sendall (which
# waits in the event loop) for what did not fit. Their sendall alone costs a
# getsockopt system call and several Python calls per response.
cdef object _DIRECT_SOCKETS = frozenset()
# class -> the attribute holding the socket whose fileno() the class's own
# fileno() returns (gevent's ``_sock``)
cdef dict _INNER_SOCKETS = {}


def register_socket_class(cls, inner=None):
    """Write responses on sockets of ``cls`` (not TLS) with a non-blocking
    sendmsg, and through ``cls.sendall`` only for what the kernel did not
    take at once. ``cls`` must wrap a descriptor that is non-blocking at the
    OS level, as gevent's sockets do.

    ``inner``: the name of the attribute holding the wrapped socket when
    ``cls.fileno()`` only returns that one's ``fileno()`` (gevent's
    ``_sock``, which a closed gevent socket replaces by a stand-in whose
    fileno() is -1); the descriptor is then read from it directly, without
    the Python frame of ``cls.fileno``."""
    global _DIRECT_SOCKETS
    _DIRECT_SOCKETS = _DIRECT_SOCKETS | {cls}
    if inner is not None:
        _INNER_SOCKETS[cls] = inner
    else:
        _INNER_SOCKETS.pop(cls, None)


# ---------------------------------------------------------------- Date cache

cdef long long _date_sec = LLONG_MIN
cdef str _date_str = ""
cdef str _sd_str = ""        # "Server: ...\r\nDate: ...\r\n"
cdef bytes _sd_line = b""    # the same, latin-1
cdef object _time_source = None


cdef Py_ssize_t _format_date(long long t, char *out, size_t size) noexcept:
    # email.utils.formatdate(t, usegmt=True) without datetime: the civil
    # date from the day count (proleptic Gregorian, as datetime uses).
    cdef long long days = t // 86400
    cdef long long secs = t - days * 86400
    if secs < 0:
        secs += 86400
        days -= 1
    cdef long long wday = (days + 4) % 7     # 1970-01-01 was a Thursday
    if wday < 0:
        wday += 7
    cdef long long z = days + 719468
    cdef long long era = (z if z >= 0 else z - 146096) // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long year = yoe + era * 400
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    cdef long long day = doy - (153 * mp + 2) // 5 + 1
    cdef long long month = mp + 3 if mp < 10 else mp - 9
    if month <= 2:
        year += 1
    return snprintf(out, size, "%.3s, %02d %.3s %04lld %02d:%02d:%02d GMT",
                    _WDAYS + 3 * wday, <int>day, _MONTHS + 3 * (month - 1),
                    year, <int>(secs // 3600), <int>((secs // 60) % 60),
                    <int>(secs % 60))


cdef int _refresh_date() except -1:
    global _date_sec, _date_str, _sd_str, _sd_line
    cdef timespec ts
    cdef long long sec
    cdef char buf[64]
    cdef Py_ssize_t n
    if _time_source is None:
        clock_gettime(CLOCK_REALTIME, &ts)
        sec = ts.tv_sec
    else:
        sec = <long long>floor(<double>_time_source())
    if sec == _date_sec:
        return 0
    n = _format_date(sec, buf, sizeof(buf))
    date = buf[:n].decode("ascii")
    # gunicorn reads its SERVER global per response; once a second is
    # close enough for the (configuration-time) trick of overriding it.
    sd = "Server: %s\r\nDate: %s\r\n" % (_gwsgi.SERVER, date)
    line = sd.encode("latin-1")
    _date_str = date
    _sd_str = sd
    _sd_line = line
    _date_sec = sec
    return 0


def http_date():
    """The current Date header value, formatted at most once a second."""
    _refresh_date()
    return _date_str


def _set_time_source(fn):
    """Tests only: read the clock through ``fn()`` (seconds as a float),
    or through clock_gettime again with None. Drops the cached value."""
    global _time_source, _date_sec
    _time_source = fn
    _date_sec = LLONG_MIN


# ------------------------------------------------------------------ helpers

cdef inline bint _is_token(object s) noexcept:
    cdef Py_ssize_t i, n
    cdef const unsigned char *d
    if PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND:
        return False
    n = PyUnicode_GET_LENGTH(s)
    if n == 0:
        return False
    d = PyUnicode_1BYTE_DATA(s)
    for i in range(n):
        if not _TCHAR[d[i]]:
            return False
    return True


cdef inline bint _is_field_value(object s) noexcept:
    cdef Py_ssize_t i, n
    cdef const unsigned char *d
    if PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND:
        return False
    n = PyUnicode_GET_LENGTH(s)
    d = PyUnicode_1BYTE_DATA(s)
    for i in range(n):
        if not _VCHAR[d[i]]:
            return False
    return True


cdef inline bint _is_status(object s) noexcept:
    # 3DIGIT, optionally followed by one SP and a reason phrase
    cdef Py_ssize_t i, n
    cdef const unsigned char *d
    if PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND:
        return False
    n = PyUnicode_GET_LENGTH(s)
    if n < 3:
        return False
    d = PyUnicode_1BYTE_DATA(s)
    for i in range(3):
        if d[i] < 48 or d[i] > 57:
            return False
    if n == 3:
        return True
    if d[3] != 32:
        return False
    for i in range(4, n):
        if not _VCHAR[d[i]]:
            return False
    return True


cdef inline bint _ieq(const unsigned char *d, const char *lower, Py_ssize_t n) noexcept:
    # ASCII case-insensitive; exact for what str.lower() does here, since no
    # latin-1 character lowercases into ASCII.
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = d[i]
        if 65 <= c <= 90:
            c += 32
        if c != <unsigned char>lower[i]:
            return False
    return True


cdef inline bint _str_ieq(object s, const char *lower, Py_ssize_t n) noexcept:
    # s is a str with one-byte kind
    return PyUnicode_GET_LENGTH(s) == n and _ieq(PyUnicode_1BYTE_DATA(s), lower, n)


cdef int _header_kind(object name) noexcept:
    # name is a valid token, hence one-byte ASCII; gunicorn's util.hop_headers
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(name)
    cdef const unsigned char *d = PyUnicode_1BYTE_DATA(name)
    if n == 14:
        if _ieq(d, b"content-length", 14):
            return HK_CONTENT_LENGTH
    elif n == 10:
        if _ieq(d, b"connection", 10):
            return HK_CONNECTION
        if _ieq(d, b"keep-alive", 10):
            return HK_HOP
    elif n == 7:
        if _ieq(d, b"upgrade", 7):
            return HK_UPGRADE
    elif n == 4:
        if _ieq(d, b"date", 4):
            return HK_HOP
    elif n == 6:
        if _ieq(d, b"server", 6):
            return HK_HOP
    elif n == 2:
        if _ieq(d, b"te", 2):
            return HK_HOP
    elif n == 8:
        if _ieq(d, b"trailers", 8):
            return HK_HOP
    elif n == 17:
        if _ieq(d, b"transfer-encoding", 17):
            return HK_HOP
    elif n == 18:
        if _ieq(d, b"proxy-authenticate", 18):
            return HK_HOP
    elif n == 19:
        if _ieq(d, b"proxy-authorization", 19):
            return HK_HOP
    return HK_NORMAL


cdef inline Py_ssize_t _chunk_line(char *out, size_t n) noexcept:
    # "%X\r\n" % n
    cdef char tmp[_CHUNK_LINE_MAX]
    cdef Py_ssize_t i = 0, j = 0
    while True:
        tmp[i] = _HEX[n & 15]
        i += 1
        n >>= 4
        if n == 0:
            break
    while i > 0:
        i -= 1
        out[j] = tmp[i]
        j += 1
    out[j] = 13
    out[j + 1] = 10
    return j + 2


cdef inline char *_put(char *dst, const void *src, Py_ssize_t n) noexcept:
    memcpy(dst, src, n)
    return dst + n


cdef inline bint _fast_str(object s) noexcept:
    return PyUnicode_CheckExact(s) and PyUnicode_KIND(s) == PyUnicode_1BYTE_KIND


def _reraise(tp, value, tb):
    if value is None:
        value = tp()
    if value.__traceback__ is not tb:
        raise value.with_traceback(tb)
    raise value


cdef bint _has_fileno(object obj) except -1:
    if not hasattr(obj, "fileno"):
        return False
    try:
        obj.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True


# ----------------------------------------------------------------- Response

@cython.freelist(32)
cdef class Response:
    """One HTTP/1.x response, written the way gunicorn's Response writes it.

    ``Response(sock, version, method, req_should_close, cfg_sendfile=True,
    is_ssl=False, uwsgi=False)``: ``version`` is the request's (major,
    minor), ``req_should_close`` what ``req.should_close()`` returned,
    ``cfg_sendfile`` gunicorn's ``cfg.sendfile`` (only ``False`` disables),
    ``uwsgi`` true when ``cfg.protocol == "uwsgi"`` (never chunked).
    """

    def __cinit__(self):
        global _made_responses
        _made_responses += 1

    def __dealloc__(self):
        global _freed_responses
        _freed_responses += 1

    def __init__(self, sock, version, method, bint req_should_close,
                 cfg_sendfile=True, is_ssl=False, uwsgi=False):
        self.sock = sock
        self._can_sendfile = cfg_sendfile is not False
        self._is_ssl = bool(is_ssl)
        self._uwsgi = bool(uwsgi)
        self._plain = not self._is_ssl and (
            (_PLAIN_SOCKET is not None and type(sock) is _PLAIN_SOCKET)
            or type(sock) in _DIRECT_SOCKETS)
        self._inner = _INNER_SOCKETS.get(type(sock)) if self._plain else None
        self.headers = []
        self._begin(version, method, req_should_close)

    def reuse(self, version, method, bint req_should_close):
        """Become the response to the next request of the same connection,
        as if made anew with these arguments and the same socket and options.

        For a worker that knows nothing outside the request can still hold
        this object or its bound methods (``start_response``,
        ``send_early_hints``): those are then made once per connection, and
        the ``headers`` list is emptied rather than made anew.
        """
        if self.headers is None:
            self.headers = []
        else:
            del self.headers[:]
        self._begin(version, method, req_should_close)

    cdef int _begin(self, version, method, bint req_should_close) except -1:
        # everything that belongs to one request (but the headers list, made
        # by __init__, emptied by reuse)
        cdef object v0, v1
        self.request_version = version
        self.method = method
        self.status = None
        self.headers_sent = False
        self.chunked = False
        self.must_close = False
        self.upgrade = False
        self.sent = 0
        self._req_should_close = req_should_close
        self._is_head = method == "HEAD"
        self._response_length = None
        self._has_rlen = False
        self._rlen = 0
        self._has_status_code = False
        self._status_code = 0
        self._omits_body = False
        self._omits_body_warned = False
        self._progress = 0
        self._vmajor = self._vminor = -1
        if PyTuple_CheckExact(version) and PyTuple_GET_SIZE(version) == 2:
            v0 = <object>PyTuple_GET_ITEM(version, 0)
            v1 = <object>PyTuple_GET_ITEM(version, 1)
            if type(v0) is int and type(v1) is int and 0 <= v0 <= 9 and 0 <= v1 <= 9:
                self._vmajor = v0
                self._vminor = v1
        if self._vmajor >= 0:
            self._ver_le_10 = self._vmajor < 1 or (self._vmajor == 1 and self._vminor == 0)
            self._ver_lt_11 = self._vmajor < 1 or (self._vmajor == 1 and self._vminor < 1)
        else:
            self._ver_le_10 = version <= (1, 0)
            self._ver_lt_11 = version < (1, 1)
        return 0

    # -- attributes gunicorn's Response has

    @property
    def status_code(self):
        if not self._has_status_code:
            raise AttributeError("'Response' object has no attribute 'status_code'")
        return self._status_code

    @property
    def response_length(self):
        return self._response_length

    @response_length.setter
    def response_length(self, value):
        self._set_response_length(value)

    @property
    def version(self):
        """The Server header value, as gunicorn's ``Response.version``."""
        return _gwsgi.SERVER

    cdef int _set_response_length(self, object value) except -1:
        self._response_length = value
        if value is None:
            self._has_rlen = False
            self._rlen = 0
            return 0
        try:
            self._rlen = value
        except OverflowError:
            # Far beyond anything a body can reach: a bound is as good.
            self._rlen = LLONG_MAX if value > 0 else LLONG_MIN
        self._has_rlen = True
        return 0

    # -- connection

    def force_close(self):
        self.must_close = True

    def should_close(self):
        return self._should_close()

    cdef bint _should_close(self) except -1:
        if self.must_close or self._req_should_close:
            return True
        if self._has_rlen or self.chunked:
            return False
        if self._is_head:
            return False
        if not self._has_status_code:
            raise AttributeError("'Response' object has no attribute 'status_code'")
        if self._status_code < 200 or self._status_code == 204 or self._status_code == 304:
            return False
        return True

    cdef bint _is_chunked(self):
        if self._uwsgi:
            # uWSGI bodies are opaque to the front proxy: chunk markers would
            # end up in the application's body.
            return False
        if self._has_rlen:
            return False
        if self._ver_le_10:
            return False
        if self._omits_body:
            return False
        return True

    # -- PEP 3333

    def start_response(self, status, headers, exc_info=None):
        cdef const unsigned char *d
        cdef int code
        if exc_info:
            try:
                if self.status and self.headers_sent:
                    _reraise(exc_info[0], exc_info[1], exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("Response headers already set!")

        if not isinstance(status, str):
            raise TypeError('%r is not a string' % status)
        if not _is_status(status):
            raise ValueError('Invalid status %r' % status)

        self.status = status
        d = PyUnicode_1BYTE_DATA(status)
        code = (d[0] - 48) * 100 + (d[1] - 48) * 10 + (d[2] - 48)
        self._status_code = code
        self._has_status_code = True

        self._process_headers(headers)
        # RFC 9110: HEAD, 1xx, 204 and 304 carry no body, whatever the app sends
        self._omits_body = (self._is_head or code == 204 or code == 304
                            or 100 <= code < 200)
        if self._omits_body and (code == 204 or 100 <= code < 200):
            # and 1xx/204 must not announce one either
            self.headers = [(k, v) for k, v in self.headers
                            if k.lower() != "content-length"]
            self._set_response_length(None)
        self.chunked = self._is_chunked()
        return self.write

    cdef int _process_headers(self, object headers) except -1:
        cdef list out = self.headers
        cdef object item, name, value
        cdef Py_ssize_t n, start, end
        cdef const unsigned char *d
        cdef int kind
        for item in headers:
            if PyTuple_CheckExact(item) and PyTuple_GET_SIZE(item) == 2:
                name = <object>PyTuple_GET_ITEM(item, 0)
                value = <object>PyTuple_GET_ITEM(item, 1)
            else:
                name, value = _unpack2(item)
                item = None

            if not isinstance(name, str):
                raise TypeError('%r is not a string' % name)
            if not _is_token(name):
                raise InvalidResponseHeaderName('%r' % name)
            if not isinstance(value, str):
                raise TypeError('%r is not a string' % value)
            if not _is_field_value(value):
                # name only: the value may carry something sensitive
                raise InvalidResponseHeader('%r' % name)

            # RFC 9110 5.5: no leading or trailing SP/HTAB
            n = PyUnicode_GET_LENGTH(value)
            d = PyUnicode_1BYTE_DATA(value)
            start = 0
            end = n
            while start < end and (d[start] == 32 or d[start] == 9):
                start += 1
            while end > start and (d[end - 1] == 32 or d[end - 1] == 9):
                end -= 1
            if start != 0 or end != n or not PyUnicode_CheckExact(value):
                value = PyUnicode_Substring(value, start, end)
                item = None

            kind = _header_kind(name)
            if kind == HK_CONTENT_LENGTH:
                self._set_response_length(int(value))
            elif kind != HK_NORMAL:
                # hop-by-hop (and Server/Date): ours replace them
                if kind == HK_CONNECTION:
                    if _str_ieq(value, b"upgrade", 7):
                        self.upgrade = True
                elif kind == HK_UPGRADE:
                    if _str_ieq(value, b"websocket", 9):
                        out.append(item if item is not None else (name, value))
                continue
            # the app's own tuple when nothing changed: no new object
            out.append(item if item is not None else (name, value))
        return 0

    # -- rendering the head

    cdef object _render_headers(self, Seg *seg):
        """Point seg at the status line and headers.

        Returns the bytes object holding them, or None when they are in the
        static buffer.  Between the length pass and the copy nothing runs
        Python code (no call out, no allocation of a GC-tracked object), so
        neither the header list nor the shared buffer can change under us.
        """
        cdef const char *conn
        cdef Py_ssize_t conn_len, total, i, n
        cdef object status = self.status
        cdef list headers = self.headers
        cdef object h, k, v
        cdef bint fast
        cdef char *dst
        cdef char *p
        cdef object owner = None
        cdef bytes sd
        n = 0
        total = 0

        if self.upgrade:
            conn = b"upgrade"
            conn_len = 7
        elif self._should_close():
            conn = b"close"
            conn_len = 5
        else:
            conn = b"keep-alive"
            conn_len = 10
        _refresh_date()
        sd = _sd_line

        fast = self._vmajor >= 0 and _fast_str(status) and headers is not None
        if fast:
            # "HTTP/x.y " status CRLF, Server/Date, "Connection: " c CRLF, CRLF
            total = 9 + PyUnicode_GET_LENGTH(status) + 2 + PyBytes_GET_SIZE(sd) \
                + 12 + conn_len + 2 + 2
            if self.chunked:
                total += 28
            n = PyList_GET_SIZE(headers)
            for i in range(n):
                h = <object>PyList_GET_ITEM(headers, i)
                if not (PyTuple_CheckExact(h) and PyTuple_GET_SIZE(h) == 2):
                    fast = False
                    break
                k = <object>PyTuple_GET_ITEM(h, 0)
                v = <object>PyTuple_GET_ITEM(h, 1)
                if not (_fast_str(k) and _fast_str(v)):
                    fast = False
                    break
                total += PyUnicode_GET_LENGTH(k) + PyUnicode_GET_LENGTH(v) + 4

        if not fast:
            owner = self._render_headers_generic(conn[:conn_len].decode("ascii"))
            seg.ptr = PyBytes_AS_STRING(owner)
            seg.len = PyBytes_GET_SIZE(owner)
            seg.owner = <PyObject *>owner
            return owner

        if total <= _HBUF_SIZE:
            dst = _hbuf
        else:
            owner = PyBytes_FromStringAndSize(NULL, total)
            dst = PyBytes_AS_STRING(owner)
        p = _put(dst, b"HTTP/", 5)
        p[0] = <char>(48 + self._vmajor)
        p[1] = 46
        p[2] = <char>(48 + self._vminor)
        p[3] = 32
        p = _put(p + 4, PyUnicode_1BYTE_DATA(status), PyUnicode_GET_LENGTH(status))
        p = _put(p, b"\r\n", 2)
        p = _put(p, PyBytes_AS_STRING(sd), PyBytes_GET_SIZE(sd))
        p = _put(p, b"Connection: ", 12)
        p = _put(p, conn, conn_len)
        p = _put(p, b"\r\n", 2)
        if self.chunked:
            p = _put(p, b"Transfer-Encoding: chunked\r\n", 28)
        for i in range(n):
            h = <object>PyList_GET_ITEM(headers, i)
            k = <object>PyTuple_GET_ITEM(h, 0)
            v = <object>PyTuple_GET_ITEM(h, 1)
            p = _put(p, PyUnicode_1BYTE_DATA(k), PyUnicode_GET_LENGTH(k))
            p[0] = 58
            p[1] = 32
            p = _put(p + 2, PyUnicode_1BYTE_DATA(v), PyUnicode_GET_LENGTH(v))
            p = _put(p, b"\r\n", 2)
        p = _put(p, b"\r\n", 2)
        seg.ptr = dst
        seg.len = p - dst
        seg.owner = <PyObject *>owner if owner is not None else NULL
        return owner

    cdef object _render_headers_generic(self, str connection):
        # Whatever the fast path does not take (a status or header replaced
        # after start_response by something that is not a plain str, an
        # unusual version): formatted the way gunicorn formats it.
        version = self.request_version
        tosend = [
            "HTTP/%s.%s %s\r\n" % (version[0], version[1], self.status),
            _sd_str,
            "Connection: %s\r\n" % connection,
        ]
        if self.chunked:
            tosend.append("Transfer-Encoding: chunked\r\n")
        for h in self.headers:
            k, v = _unpack2(h)
            tosend.append("%s: %s\r\n" % (k, v))
        return ("%s\r\n" % "".join(tosend)).encode("latin-1")

    # -- putting bytes on the wire

    cdef int _send(self, Seg *segs, Py_ssize_t n, int more) except -1:
        self._progress = 0
        if self._plain:
            return self._send_plain(segs, n, more)
        return self._send_stream(segs, n)

    cdef int _send_plain(self, Seg *segs, Py_ssize_t n, int more) except -1:
        cdef iovec iov[_IOV_BATCH]
        cdef msghdr msg
        cdef Py_ssize_t i = 0, off = 0, k, o, rem
        cdef ssize_t r
        cdef int cnt, fd
        cdef int flags = MSG_DONTWAIT | MSG_NOSIGNAL | more
        memset(&msg, 0, sizeof(msg))
        # fileno() each time, not cached: a socket closed meanwhile must fail
        # with EBADF, never write into a descriptor number reused since.
        if self._inner is None:
            fd = self.sock.fileno()
        else:
            fd = getattr(self.sock, self._inner).fileno()
        while True:
            while i < n and segs[i].len <= off:
                i += 1
                off = 0
            if i >= n:
                return 0
            cnt = 0
            k = i
            o = off
            while k < n and cnt < _IOV_BATCH:
                if segs[k].len > o:
                    iov[cnt].iov_base = <void *>(segs[k].ptr + o)
                    iov[cnt].iov_len = <size_t>(segs[k].len - o)
                    cnt += 1
                k += 1
                o = 0
            msg.msg_iov = iov
            msg.msg_iovlen = cnt
            r = sendmsg(fd, &msg, flags)
            if r < 0:
                if errno == EINTR:
                    # cannot happen without blocking; Python's handlers run
                    # when we return to the interpreter
                    continue
                if errno == EAGAIN:   # == EWOULDBLOCK on Linux
                    # The socket buffer is full: let sendall wait for room
                    # (timeout, GIL released), one piece, then try again.
                    self._sendall_piece(&segs[i], off, more)
                    self._progress += segs[i].len - off
                    i += 1
                    off = 0
                    continue
                PyErr_SetFromErrno(OSError)
                return -1
            self._progress += r
            while r > 0:
                rem = segs[i].len - off
                if r >= rem:
                    r -= rem
                    i += 1
                    off = 0
                else:
                    off += r
                    r = 0

    cdef int _sendall_piece(self, Seg *seg, Py_ssize_t off, int flags) except -1:
        cdef Py_ssize_t n = seg.len - off, start
        cdef object data, own
        if seg.owner != NULL:
            own = <object>seg.owner
            start = (seg.ptr + off) - PyBytes_AS_STRING(own)
            if start == 0 and n == PyBytes_GET_SIZE(own):
                data = own
            else:
                data = memoryview(own)[start:start + n]
        else:
            # C memory (possibly the shared header buffer): copied before
            # sendall can let another thread in
            data = PyBytes_FromStringAndSize(seg.ptr + off, n)
        if flags:
            self.sock.sendall(data, flags)
        else:
            self.sock.sendall(data)
        return 0

    cdef int _send_stream(self, Seg *segs, Py_ssize_t n) except -1:
        # socket-likes: one sendall per run of pieces, joined; a large body
        # piece goes on its own rather than being copied
        cdef Py_ssize_t i = 0, j, k, tot, nonempty, last
        cdef char *p
        cdef object buf
        while i < n:
            if segs[i].len == 0:
                i += 1
                continue
            if segs[i].owner != NULL and segs[i].len >= _JOIN_LIMIT:
                self._sendall_piece(&segs[i], 0, 0)
                self._progress += segs[i].len
                i += 1
                continue
            j = i
            tot = 0
            nonempty = 0
            last = i
            while j < n and not (segs[j].owner != NULL and segs[j].len >= _JOIN_LIMIT):
                if segs[j].len:
                    tot += segs[j].len
                    nonempty += 1
                    last = j
                j += 1
            if nonempty == 1:
                self._sendall_piece(&segs[last], 0, 0)
            else:
                buf = PyBytes_FromStringAndSize(NULL, tot)
                p = PyBytes_AS_STRING(buf)
                for k in range(i, j):
                    p = _put(p, segs[k].ptr, segs[k].len)
                self.sock.sendall(buf)
            self._progress += tot
            i = j
        return 0

    cdef int _send_headers(self, const char *tail, Py_ssize_t tail_len, int more) except -1:
        # the head, plus an optional tail (last chunk, chunk-size line) in
        # the same write
        cdef Seg segs[2]
        cdef Py_ssize_t n = 1
        owner = self._render_headers(&segs[0])
        if tail_len:
            segs[1].ptr = tail
            segs[1].len = tail_len
            segs[1].owner = NULL
            n = 2
        try:
            self._send(segs, n, more)
        except BaseException:
            if self._progress >= segs[0].len:
                self.headers_sent = True
            raise
        self.headers_sent = True
        return 0

    def send_headers(self):
        if not self.headers_sent:
            self._send_headers(NULL, 0, 0)

    cdef int _warn_omitted(self) except -1:
        _log.warning(_OMIT_MSG, self.method, self.status_code)
        self._omits_body_warned = True
        return 0

    # -- body

    def write(self, arg):
        self._write(arg)

    cdef int _write(self, object data) except -1:
        cdef Seg segs[4]
        cdef char line[_CHUNK_LINE_MAX]
        cdef Py_ssize_t n = 0, arglen, tosend
        cdef object owner = None
        cdef bint had_headers = self.headers_sent

        if not PyBytes_Check(data):
            if not had_headers:
                self._send_headers(NULL, 0, 0)
            raise TypeError('%r is not a byte' % data)
        arglen = PyBytes_GET_SIZE(data)

        if self._omits_body:
            if not had_headers:
                self._send_headers(NULL, 0, 0)
            if arglen and not self._omits_body_warned:
                self._warn_omitted()
            return 0

        tosend = arglen
        if self._has_rlen:
            if self.sent >= self._rlen:
                tosend = 0      # never more than the declared length
            elif self._rlen - self.sent < arglen:
                tosend = <Py_ssize_t>(self._rlen - self.sent)
        if tosend == 0:
            # nothing to send (and an empty chunk would end the body)
            if not had_headers:
                self._send_headers(NULL, 0, 0)
            return 0

        if not had_headers:
            owner = self._render_headers(&segs[0])
            n = 1
        if self.chunked:
            segs[n].ptr = line
            segs[n].len = _chunk_line(line, <size_t>tosend)
            segs[n].owner = NULL
            n += 1
        segs[n].ptr = PyBytes_AS_STRING(data)
        segs[n].len = tosend
        segs[n].owner = <PyObject *>data
        n += 1
        if self.chunked:
            segs[n].ptr = b"\r\n"
            segs[n].len = 2
            segs[n].owner = NULL
            n += 1

        self.sent += tosend
        try:
            self._send(segs, n, 0)
        except BaseException:
            if not had_headers:
                if self._progress >= segs[0].len:
                    self.headers_sent = True
                else:
                    self.sent -= tosend
            raise
        self.headers_sent = True
        return 0

    def write_list(self, items):
        """Send a whole body (a list or tuple of bytes) and end the response.

        The same bytes as ``for item in items: write(item)`` then ``close()``,
        in one gather write with the headers when they are not out yet.
        """
        self._write_list(items)

    cdef int _write_list(self, object items) except -1:
        cdef Seg stack_segs[3 * _STACK_ITEMS + 2]
        cdef char stack_lines[_STACK_ITEMS * _CHUNK_LINE_MAX]
        cdef Seg *segs = stack_segs
        cdef char *lines = stack_lines
        cdef void *mem = NULL
        cdef Py_ssize_t count, idx, n = 1, first, arglen, tosend
        cdef long long sent
        cdef bint is_list, warn = False, had_headers, has_bad = False
        cdef PyObject *item
        cdef object bad = None, owner = None

        if PyList_CheckExact(items):
            is_list = True
            count = PyList_GET_SIZE(items)
        elif PyTuple_CheckExact(items):
            is_list = False
            count = PyTuple_GET_SIZE(items)
        else:
            for obj in items:
                self._write(obj)
            return self._close()

        if count > _STACK_ITEMS:
            mem = PyMem_Malloc((3 * count + 2) * sizeof(Seg) + count * _CHUNK_LINE_MAX)
            if mem == NULL:
                raise MemoryError()
            segs = <Seg *>mem
            lines = <char *>(segs + 3 * count + 2)
        try:
            # The same decisions write() takes item by item; no Python code
            # runs in this loop, and each item sent is held by a reference.
            sent = self.sent
            for idx in range(count):
                item = PyList_GET_ITEM(items, idx) if is_list else PyTuple_GET_ITEM(items, idx)
                if not PyBytes_Check(<object>item):
                    bad = <object>item
                    has_bad = True
                    break
                arglen = PyBytes_GET_SIZE(<object>item)
                if self._omits_body:
                    if arglen and not self._omits_body_warned:
                        warn = True
                    continue
                tosend = arglen
                if self._has_rlen:
                    if sent >= self._rlen:
                        continue
                    if self._rlen - sent < arglen:
                        tosend = <Py_ssize_t>(self._rlen - sent)
                if tosend == 0:
                    continue
                sent += tosend
                if self.chunked:
                    segs[n].ptr = lines + idx * _CHUNK_LINE_MAX
                    segs[n].len = _chunk_line(lines + idx * _CHUNK_LINE_MAX, <size_t>tosend)
                    segs[n].owner = NULL
                    n += 1
                Py_INCREF(<object>item)
                segs[n].ptr = PyBytes_AS_STRING(<object>item)
                segs[n].len = tosend
                segs[n].owner = item
                n += 1
                if self.chunked:
                    segs[n].ptr = b"\r\n"
                    segs[n].len = 2
                    segs[n].owner = NULL
                    n += 1
            if not has_bad and self.chunked:
                segs[n].ptr = b"0\r\n\r\n"
                segs[n].len = 5
                segs[n].owner = NULL
                n += 1

            # Warn before rendering: logging is Python code, and from the
            # rendering on the head may sit in the shared buffer until sent.
            if warn:
                self._warn_omitted()
            had_headers = self.headers_sent
            if not had_headers:
                owner = self._render_headers(&segs[0])
                first = 0
            else:
                first = 1
            if n > first:
                self.sent = sent
                try:
                    self._send(segs + first, n - first, 0)
                except BaseException:
                    if not had_headers and self._progress >= segs[0].len:
                        self.headers_sent = True
                    raise
                self.headers_sent = True
            if has_bad:
                raise TypeError('%r is not a byte' % bad)
        finally:
            for idx in range(1, n):
                Py_XDECREF(segs[idx].owner)
            if mem != NULL:
                PyMem_Free(mem)
        return 0

    def write_file(self, respiter):
        if not self._sendfile(respiter):
            for item in respiter:
                self._write(item)

    cdef bint _sendfile(self, object respiter) except -1:
        cdef Seg seg
        cdef int more = 0
        cdef bint chunked
        cdef bytes line = None
        if self._is_ssl or not self._can_sendfile:
            return False
        if not _has_fileno(respiter.filelike):
            return False
        fileno = respiter.filelike.fileno()
        try:
            offset = os.lseek(fileno, 0, os.SEEK_CUR)
            if self._response_length is None:
                nbytes = os.fstat(fileno).st_size - offset
            else:
                nbytes = self._response_length
        except (OSError, io.UnsupportedOperation):
            return False

        if self._omits_body:
            if not self.headers_sent:
                self._send_headers(NULL, 0, 0)
            if nbytes > 0 and not self._omits_body_warned:
                self._warn_omitted()
            return True

        chunked = self._is_chunked()
        if chunked:
            line = ("%X\r\n" % nbytes).encode("utf-8")
        if self._plain and nbytes > 0:
            # the head (and chunk-size line) leave with the file's first bytes
            more = MSG_MORE
        if not self.headers_sent:
            if line is not None:
                self._send_headers(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), more)
            else:
                self._send_headers(NULL, 0, more)
        elif line is not None:
            seg.ptr = PyBytes_AS_STRING(line)
            seg.len = PyBytes_GET_SIZE(line)
            seg.owner = <PyObject *>line
            self._send(&seg, 1, more)
        if nbytes > 0:
            self.sock.sendfile(respiter.filelike, offset=offset, count=nbytes)
        if chunked:
            seg.ptr = b"\r\n"
            seg.len = 2
            seg.owner = NULL
            self._send(&seg, 1, 0)
        os.lseek(fileno, offset, os.SEEK_SET)
        return True

    def close(self):
        self._close()

    cdef int _close(self) except -1:
        cdef Seg seg
        if not self.headers_sent:
            if self.chunked:
                self._send_headers(b"0\r\n\r\n", 5, 0)
            else:
                self._send_headers(NULL, 0, 0)
        elif self.chunked:
            seg.ptr = b"0\r\n\r\n"
            seg.len = 5
            seg.owner = NULL
            self._send(&seg, 1, 0)
        return 0

    # -- wsgi.early_hints

    def send_early_hints(self, headers):
        """103 Early Hints before the response (gunicorn's wsgi.early_hints):
        nothing once the headers are out, nothing for HTTP/1.0 clients."""
        if self.headers_sent:
            return
        if self._ver_lt_11:
            return
        response = b"HTTP/1.1 103 Early Hints\r\n"
        for item in headers:
            name, value = _unpack2(item)
            if isinstance(name, bytes):
                name = name.decode("latin-1")
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if not isinstance(name, str):
                _TOKEN_PY_RE.fullmatch(name)    # raises gunicorn's TypeError
                raise InvalidResponseHeaderName('%r' % name)
            if not _is_token(name):
                raise InvalidResponseHeaderName('%r' % name)
            if not isinstance(value, str):
                _TOKEN_PY_RE.fullmatch(value)
                raise InvalidResponseHeader('%r' % name)
            if not _is_field_value(value):
                raise InvalidResponseHeader('%r' % name)
            value = value.strip(" \t")
            response += f"{name}: {value}\r\n".encode("latin-1")
        response += b"\r\n"
        self.sock.sendall(response)
