# HTTP/1.1 request parser producing the WSGI environ directly.
#
# Bytes are received into one bytes object and parsed where they lie; the
# only Python objects made per request are the environ, its values, the body
# reader and a small Request record. Each decision, including the order in
# which checks run while a head arrives piece by piece, follows gunicorn's
# reference parser (gunicorn.http.message) so that the same bytes, received in
# the same pieces, are accepted or refused the same way with the same error.

import ipaddress
import os
import sys

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_SetItem, PyDict_GetItem, PyDict_Copy, PyDict_Size
from cpython.unicode cimport PyUnicode_DecodeLatin1
from cpython.object cimport PyObject
from libc.stdint cimport uint64_t
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.long cimport PyLong_AsLongAndOverflow
from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.errno cimport errno, EINTR, EAGAIN

from includes.sys_socket cimport recv, MSG_DONTWAIT

from gunicorn import SERVER_SOFTWARE
from gunicorn.http.errors import (
    ChunkMissingTerminator, ConfigurationProblem, ExpectationFailed,
    InvalidChunkExtension, InvalidChunkSize, InvalidHeader, InvalidHeaderName,
    InvalidHTTPVersion, InvalidRequestLine, InvalidRequestMethod,
    InvalidSchemeHeaders, LimitRequestHeaders, LimitRequestLine, NoMoreData,
    ObsoleteFolding, UnsupportedTransferCoding,
)
from gunicorn.http.body import CHUNK_EXT_RE
from gunicorn.http.wsgi import FileWrapper, WSGIErrorsWrapper
from gunicorn.util import split_request_uri

cdef extern from "http_scan.h":
    Py_ssize_t tw_find_ctl(const char *p, Py_ssize_t i, Py_ssize_t limit,
                           unsigned int *high) noexcept nogil
    Py_ssize_t tw_upper_name(const char *p, Py_ssize_t a, Py_ssize_t limit,
                             char *out, Py_ssize_t max) noexcept nogil
    Py_ssize_t tw_find_head_end(const char *p, Py_ssize_t i, Py_ssize_t limit) noexcept nogil
    int tw_scan_target(const char *p, Py_ssize_t a, Py_ssize_t b, Py_ssize_t limit,
                       Py_ssize_t *question, Py_ssize_t *hash, int *percent) noexcept nogil

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    PyObject *PyDict_SetDefault(object d, object key, object default) except NULL
    dict _PyDict_NewPresized(Py_ssize_t minused)
    Py_ssize_t PyDict_GET_SIZE(object d)
    int PyDict_Update(object a, object b) except -1
    PyObject *_bytes_new "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t n)
    int _PyBytes_Resize(PyObject **bytes, Py_ssize_t newsize)
    void Py_DECREF(PyObject *o)


# gunicorn.http.message limits
DEF MAX_REQUEST_LINE = 8190
DEF MAX_HEADERS = 32768
DEF DEFAULT_MAX_HEADERFIELD_SIZE = 8190
# gunicorn.http.body: largest piece asked of a reader in one step
DEF READ_STEP = 1024
DEF ENVIRON_SIZE = 40
DEF NAME_BUF = 64       # header names up to this long are looked up fast
DEF RECV_SIZE = 8192
DEF SMALL_RECV = 16384  # CoopSource: up to this much is received into _small_recv
DEF MAX_BODY_CHUNK = 1048576
DEF FIELDS_AT_ONCE = 64 # header fields _build records before it puts them in the environ
DEF CONN_VALUES = 4     # known headers kept per connection, at most
DEF TEMPLATE_PAUSE = 16         # requests without a template after one that did not pay
DEF TEMPLATE_PAUSE_MAX = 1024

DEF HEADER_MAP_REFUSE = 0
DEF HEADER_MAP_DROP = 1
DEF HEADER_MAP_DANGEROUS = 2

DEF ST_BEGIN = 0       # nothing of the request examined yet
DEF ST_LINE = 1        # looking for the end of the request line
DEF ST_HEADERS = 2     # looking for the end of the header block
DEF ST_BODY = 3        # head parsed; the body belongs to req.body

DEF BODY_LENGTH = 0
DEF BODY_CHUNKED = 1

DEF CH_SIZE = 0        # chunked decoder: at a chunk-size line
DEF CH_DATA = 1
DEF CH_DATA_END = 2    # the CRLF after chunk data
DEF CH_DONE = 3

DEF CONN_NONE = 0
DEF CONN_CLOSE = 1
DEF CONN_KEEPALIVE = 2
DEF CONN_OTHER = 3

# Known header names: their environ key is an interned constant and a few of
# them drive framing and policy.
DEF H_OTHER = 0
DEF H_HOST = 1
DEF H_CONTENT_TYPE = 2
DEF H_CONTENT_LENGTH = 3
DEF H_TRANSFER_ENCODING = 4
DEF H_EXPECT = 5
DEF H_CONNECTION = 6
DEF H_SCRIPT_NAME = 7
DEF H_PLAIN = 8        # nothing special, only a constant key

cdef bytes _B_TRUE = b"1"


# Character classes, indexed by byte value.
cdef unsigned char TOKEN_CHARS[256]
cdef unsigned char VALUE_BAD[256]     # RFC 9110 5.5: controls but HTAB, and DEL
cdef unsigned char HEXVAL[256]        # 0xFF: not a hex digit
cdef unsigned char UPNAME[256]        # upper-case form of a token character, 0 for others

cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN_CHARS[c] = 0
        VALUE_BAD[c] = 1 if ((c < 0x20 and c != 0x09) or c == 0x7f) else 0
        HEXVAL[c] = 0xFF
    for c in range(256):
        UPNAME[c] = 0
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        TOKEN_CHARS[c] = 1
        UPNAME[c] = c - 32 if 97 <= c <= 122 else c
    for c in range(10):
        HEXVAL[48 + c] = c
    for c in range(6):
        HEXVAL[97 + c] = 10 + c
        HEXVAL[65 + c] = 10 + c

_init_tables()


cdef inline unsigned char _upper(unsigned char c) nogil:
    if 97 <= c <= 122:
        return c - 32
    return c


cdef inline bint _ci_equal(const char *p, Py_ssize_t n, const char *upper_name, Py_ssize_t m) nogil:
    # p[:n] equals the upper-case ASCII name, ignoring case
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if _upper(<unsigned char>p[i]) != <unsigned char>upper_name[i]:
            return False
    return True


cdef inline str _latin1(const char *p, Py_ssize_t n):
    return PyUnicode_DecodeLatin1(p, n, NULL)


cdef inline str _ascii(const char *p, Py_ssize_t n):
    # bytes known to be ASCII: no scan for the widest character
    cdef object s = PyUnicode_New(n, 127)
    if n:
        memcpy(PyUnicode_DATA(s), p, n)
    return <str>s


cdef str _port_str(port):
    # str(port) for a port number, without int's general conversion
    cdef long v
    cdef char digits[8]
    cdef int i = 8, overflow = 0
    if type(port) is not int:
        return str(port)
    v = PyLong_AsLongAndOverflow(port, &overflow)
    if overflow or v < 0 or v > 999999:
        return str(port)
    while True:
        i -= 1
        digits[i] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
    return _ascii(digits + i, 8 - i)


cdef Py_ssize_t _line_end(const char *p, Py_ssize_t a, Py_ssize_t h_end):
    """Where the line starting at a ends: its CRLF, or the end of the block."""
    cdef const char *hit
    cdef Py_ssize_t b = a
    while b < h_end:
        hit = <const char *>memchr(p + b, c'\r', h_end - b)
        if hit == NULL:
            return h_end
        b = hit - p
        if b + 1 < h_end and p[b + 1] == b'\n':
            return b
        b += 1
    return h_end


cdef int _bad_header_line(const char *p, Py_ssize_t a, Py_ssize_t b) except -1:
    # gunicorn: no colon (or one at the start) is InvalidHeader with the
    # line; otherwise the name is not a token.
    cdef const char *hit = <const char *>memchr(p + a, c':', b - a)
    if hit == NULL or hit == p + a:
        raise InvalidHeader(_latin1(p + a, b - a))
    raise InvalidHeaderName(_latin1(p + a, hit - p - a))


# Interned environ keys of the common request headers.
cdef list _KNOWN = []       # (UPPER-NAME bytes, kind, environ key or None, shared value)

# Headers whose values vary little among the requests a worker sees (a
# browser sends the same ones on every request, and browsers of one kind send
# the same ones as each other): the last value of each is kept, and a request
# with the same bytes gets the same str object instead of a new one.
# Cookie and Authorization differ between clients but seldom between the
# requests of one connection: their last values are kept per connection. The
# others (Referer, lengths, addresses...) differ too often to gain anything.
_SHARED_VALUES = frozenset((
    "HOST", "USER-AGENT", "ACCEPT", "ACCEPT-LANGUAGE", "ACCEPT-ENCODING", "CONNECTION",
    "CONTENT-TYPE", "CACHE-CONTROL", "UPGRADE-INSECURE-REQUESTS", "SEC-FETCH-DEST",
    "SEC-FETCH-MODE", "SEC-FETCH-SITE", "SEC-FETCH-USER", "ORIGIN", "PRAGMA",
    "X-FORWARDED-PROTO", "X-REQUESTED-WITH", "DNT", "SEC-CH-UA", "SEC-CH-UA-MOBILE",
    "SEC-CH-UA-PLATFORM", "TE", "KEEP-ALIVE"))
_CONNECTION_VALUES = frozenset(("COOKIE", "AUTHORIZATION"))
DEF SHARE_NONE = 0
DEF SHARE_WORKER = 1        # the last value in ParserConfig.shared_values
DEF SHARE_CONNECTION = 2    # the last value in RequestParser.conn_values

def _known(name, int kind):
    key = None
    if kind not in (H_CONTENT_TYPE, H_CONTENT_LENGTH, H_SCRIPT_NAME):
        key = sys.intern("HTTP_" + name.replace("-", "_"))
    _KNOWN.append((name.encode("ascii"), kind, key,
                   SHARE_WORKER if name in _SHARED_VALUES else
                   SHARE_CONNECTION if name in _CONNECTION_VALUES else SHARE_NONE))

for _n, _k in (
        ("HOST", H_HOST), ("USER-AGENT", H_PLAIN), ("ACCEPT", H_PLAIN),
        ("ACCEPT-LANGUAGE", H_PLAIN), ("ACCEPT-ENCODING", H_PLAIN),
        ("CONNECTION", H_CONNECTION), ("COOKIE", H_PLAIN), ("REFERER", H_PLAIN),
        ("CONTENT-TYPE", H_CONTENT_TYPE), ("CONTENT-LENGTH", H_CONTENT_LENGTH),
        ("TRANSFER-ENCODING", H_TRANSFER_ENCODING), ("EXPECT", H_EXPECT),
        ("CACHE-CONTROL", H_PLAIN), ("UPGRADE-INSECURE-REQUESTS", H_PLAIN),
        ("SEC-FETCH-DEST", H_PLAIN), ("SEC-FETCH-MODE", H_PLAIN),
        ("SEC-FETCH-SITE", H_PLAIN), ("SEC-FETCH-USER", H_PLAIN),
        ("ORIGIN", H_PLAIN), ("AUTHORIZATION", H_PLAIN), ("PRAGMA", H_PLAIN),
        ("IF-NONE-MATCH", H_PLAIN), ("IF-MODIFIED-SINCE", H_PLAIN),
        ("X-FORWARDED-FOR", H_PLAIN), ("X-FORWARDED-PROTO", H_PLAIN),
        ("X-REAL-IP", H_PLAIN), ("X-REQUESTED-WITH", H_PLAIN), ("DNT", H_PLAIN),
        ("SEC-CH-UA", H_PLAIN), ("SEC-CH-UA-MOBILE", H_PLAIN),
        ("SEC-CH-UA-PLATFORM", H_PLAIN), ("TE", H_PLAIN), ("RANGE", H_PLAIN),
        ("KEEP-ALIVE", H_PLAIN), ("SCRIPT_NAME", H_SCRIPT_NAME)):
    _known(_n, _k)

cdef Py_ssize_t _NKNOWN = len(_KNOWN)
cdef const char *_KNOWN_NAME[64]
cdef Py_ssize_t _KNOWN_LEN[64]
cdef int _KNOWN_KIND[64]
cdef PyObject *_KNOWN_KEY[64]
cdef unsigned char _KNOWN_SHARED[64]  # SHARE_*
cdef Py_ssize_t _CONN_SLOT[64]       # known headers kept per connection: the index
cdef Py_ssize_t _NCONN_KNOWN = 0     # of their RequestParser.conn_values
cdef char _KNOWN_PADDED[64][32]     # each name, zero-padded: compared by words
# A name's index by a hash of its length, its first 8 bytes (zero-padded)
# and its last 8 (none below 8), with no two known names in one slot: one
# candidate to compare
cdef signed char _KNOWN_BY_HASH[256]
cdef uint64_t _KNOWN_MUL = 0


cdef inline unsigned int _known_hash(const char *name, Py_ssize_t n) noexcept nogil:
    cdef uint64_t first, last = 0
    memcpy(&first, name, 8)
    if n >= 8:
        memcpy(&last, name + n - 8, 8)
    return <unsigned int>((((first ^ (last << 1)) + <uint64_t>n) * _KNOWN_MUL) >> 56)

cdef void _init_known():
    global _NCONN_KNOWN
    global _KNOWN_MUL
    cdef Py_ssize_t i, tries
    cdef bytes b
    cdef uint64_t m = 0x9E3779B97F4A7C15
    cdef unsigned int h
    assert _NKNOWN < 127
    for i in range(_NKNOWN):
        b = _KNOWN[i][0]
        _KNOWN_NAME[i] = PyBytes_AS_STRING(b)
        _KNOWN_LEN[i] = PyBytes_GET_SIZE(b)
        _KNOWN_KIND[i] = _KNOWN[i][1]
        _KNOWN_KEY[i] = <PyObject *>_KNOWN[i][2]
        _KNOWN_SHARED[i] = _KNOWN[i][3]
        if _KNOWN_SHARED[i] == SHARE_CONNECTION:
            assert _NCONN_KNOWN < CONN_VALUES
            _CONN_SLOT[i] = _NCONN_KNOWN
            _NCONN_KNOWN += 1
        assert _KNOWN_LEN[i] <= 32
        memset(_KNOWN_PADDED[i], 0, 32)
        memcpy(_KNOWN_PADDED[i], _KNOWN_NAME[i], _KNOWN_LEN[i])
    # the first odd multiplier (of a fixed sequence) that separates them
    for tries in range(1000000):
        _KNOWN_MUL = m | 1
        memset(_KNOWN_BY_HASH, -1, sizeof(_KNOWN_BY_HASH))
        for i in range(_NKNOWN):
            h = _known_hash(_KNOWN_PADDED[i], _KNOWN_LEN[i])
            if _KNOWN_BY_HASH[h] >= 0:
                break
            _KNOWN_BY_HASH[h] = <signed char>i
        else:
            return
        m = m * 6364136223846793005ULL + 1442695040888963407ULL
    raise RuntimeError("no hash separates the known header names")

_init_known()


cdef inline Py_ssize_t _lookup_known(const char *upname, Py_ssize_t n) noexcept:
    # The index of upname[:n] among the known names, or -1. Compared 8 bytes
    # at a time with the zero-padded names: the caller has zeroed the 8
    # bytes after upname[n - 1].
    cdef Py_ssize_t k, i
    cdef uint64_t x, y, diff
    if n > 32:
        return -1
    k = _KNOWN_BY_HASH[_known_hash(upname, n)]
    if k < 0 or _KNOWN_LEN[k] != n:
        return -1
    memcpy(&x, upname, 8)
    memcpy(&y, _KNOWN_PADDED[k], 8)
    diff = x ^ y
    i = 8
    while i < n:
        memcpy(&x, upname + i, 8)
        memcpy(&y, _KNOWN_PADDED[k] + i, 8)
        diff |= x ^ y
        i += 8
    return k if diff == 0 else -1

# at most this long, a value of a header above is shared (kept per connection)
DEF SHARED_VALUE_MAX = 256
DEF CONNECTION_VALUE_MAX = 8192

# Request methods and protocol strings seen on nearly every request.
cdef dict _METHODS = {m.encode(): sys.intern(m) for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")}
cdef str _GET = _METHODS[b"GET"]
cdef str _POST = _METHODS[b"POST"]
cdef str _HEAD = _METHODS[b"HEAD"]
cdef str _HTTP10 = sys.intern("HTTP/1.0")
cdef str _HTTP11 = sys.intern("HTTP/1.1")
cdef tuple _V10 = (1, 0)
cdef tuple _V11 = (1, 1)
cdef str _EMPTY = ""
cdef str _HTTP = "http"
cdef str _HTTPS = "https"

cdef str K_INPUT = "wsgi.input"
cdef str K_SOCKET = "gunicorn.socket"
cdef str K_METHOD = "REQUEST_METHOD"
cdef str K_QUERY = "QUERY_STRING"
cdef str K_RAW_URI = "RAW_URI"
cdef str K_PROTOCOL = "SERVER_PROTOCOL"
cdef str K_CONTENT_TYPE = "CONTENT_TYPE"
cdef str K_CONTENT_LENGTH = "CONTENT_LENGTH"
cdef str K_SCHEME = "wsgi.url_scheme"
cdef str K_REMOTE_ADDR = "REMOTE_ADDR"
cdef str K_REMOTE_PORT = "REMOTE_PORT"
cdef str K_SERVER_NAME = "SERVER_NAME"
cdef str K_SERVER_PORT = "SERVER_PORT"
cdef str K_PATH_INFO = "PATH_INFO"
cdef str K_SCRIPT_NAME = "SCRIPT_NAME"
cdef str K_HTTP_SCRIPT_NAME = sys.intern("HTTP_SCRIPT_NAME")

# The environ key of each known header, and whether a connection's environ
# template may hold it (see RequestParser._build): every known header but
# SCRIPT_NAME, whose value also changes PATH_INFO.
# RequestParser.last_mask: no mask to compare with (no known header has
# index 63)
cdef uint64_t NO_MASK = (<uint64_t>1) << 63

cdef PyObject *_KNOWN_ENVKEY[64]
cdef bint _KNOWN_IN_TEMPLATE[64]

cdef void _init_known_keys():
    cdef Py_ssize_t k
    # bit 63 of a header mask means "no mask" (RequestParser.last_mask)
    assert _NKNOWN < 63
    for k in range(_NKNOWN):
        _KNOWN_IN_TEMPLATE[k] = _KNOWN_KIND[k] != H_SCRIPT_NAME
        if _KNOWN_KIND[k] == H_CONTENT_TYPE:
            _KNOWN_ENVKEY[k] = <PyObject *>K_CONTENT_TYPE
        elif _KNOWN_KIND[k] == H_CONTENT_LENGTH:
            _KNOWN_ENVKEY[k] = <PyObject *>K_CONTENT_LENGTH
        elif _KNOWN_KIND[k] == H_SCRIPT_NAME:
            _KNOWN_ENVKEY[k] = <PyObject *>K_HTTP_SCRIPT_NAME
        else:
            _KNOWN_ENVKEY[k] = _KNOWN_KEY[k]

_init_known_keys()

# gunicorn.http.message: fields a trailer may not carry (RFC 9110 6.5.1)
cdef frozenset _FORBIDDEN_TRAILER = frozenset((
    "HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "AUTHORIZATION", "TE"))


class _Stop(object):
    """Returned by parse() at a clean end of the connection."""
    def __repr__(self):
        return "STOP"

STOP = _Stop()


# Objects of each per-request class made and freed in this process, for the
# leak tests and the leak benchmark. Plain C counters, always compiled in:
# two increments per object cost nothing measurable, and the GIL serialises
# every constructor and destructor, so no atomics are needed. The parser
# counts in __cinit__ and __dealloc__; Request and Body, made for every
# request, have no __dealloc__ and count in their tp_alloc and tp_free
# (live_count.h), set up below their definitions.
cdef extern from "live_count.h":
    Py_ssize_t *_made "tw_made"
    Py_ssize_t *_freed "tw_freed"
    int tw_count_type(object t, int i)

cdef enum:
    LIVE_PARSER = 0
    LIVE_REQUEST = 1
    LIVE_BODY = 2


def live_objects():
    """{class name: {"made": n, "freed": m}} for RequestParser, Request and
    Body since this module was imported (in a forked worker: since the
    master imported it, so compare differences)."""
    out = {}
    for name, kind in (("RequestParser", LIVE_PARSER), ("Request", LIVE_REQUEST),
                       ("Body", LIVE_BODY)):
        out[name] = {"made": _made[kind], "freed": _freed[kind]}
    return out


cdef dict _presized(dict items, dict more=None):
    """A dict of ``items`` (then ``more``) whose table is sized for a whole
    environ: a copy of it, one per request, then never needs to grow.

    Filled item by item: dict.update() into an empty dict would replace the
    large table with a copy of the small one."""
    cdef dict d = _PyDict_NewPresized(ENVIRON_SIZE)
    for k, v in items.items():
        d[k] = v
    if more is not None:
        for k, v in more.items():
            d[k] = v
    return d


def _str_keyed_size():
    full = {}
    for i in range(ENVIRON_SIZE):
        full["k%d" % i] = None
    return sys.getsizeof(full)

cdef Py_ssize_t _STR_KEYED_SIZE = _str_keyed_size()


cdef dict _str_keyed(dict items):
    """A copy of ``items`` whose table is also sized for a whole environ, but
    grown key by key, as a dict of str keys grows (past the items with
    stand-in keys, removed at the end).

    Since CPython 3.11 such a table holds str keys only: a third smaller
    than the general one _PyDict_NewPresized makes, so that a copy of it,
    one per request, stays within what malloc keeps at hand. Adding a key
    to it costs more, though: only a dict whose copies get few keys added
    is worth making so."""
    cdef dict d = {}
    for k, v in items.items():
        d[k] = v
    stand_ins = []
    while sys.getsizeof(d) < _STR_KEYED_SIZE:
        k = "\x00%d" % len(stand_ins)
        stand_ins.append(k)
        d[k] = None
    for k in stand_ins:
        del d[k]
    return d


# Keys every request sets, in the base environ with a placeholder: in the
# copy made per request, setting one replaces a value instead of adding an
# entry, which costs a dict less. _build sets every one of them.
cdef dict _PER_REQUEST = dict.fromkeys((K_METHOD, K_QUERY, K_RAW_URI, K_PROTOCOL, K_INPUT,
                                        K_SCHEME, K_PATH_INFO, K_SCRIPT_NAME))
# (but for a request without a query, QUERY_STRING is left as it is)
_PER_REQUEST[K_QUERY] = _EMPTY
# and the keys a connection sets (REMOTE_PORT is removed again for a peer
# that has no port; SERVER_* of a unix socket listener are set per request)
_PER_REQUEST.update(dict.fromkeys((K_SOCKET, K_REMOTE_ADDR, K_REMOTE_PORT, K_SERVER_NAME,
                                   K_SERVER_PORT)))


def supports_config(cfg):
    """Whether this parser can serve a deployment with these settings.

    Returns (True, None) or (False, reason); for the settings below the
    workers use gunicorn's own parser instead.
    """
    if getattr(cfg, "protocol", "http") == "uwsgi":
        return False, "protocol = uwsgi"
    if getattr(cfg, "proxy_protocol", "off") not in ("off", None, False):
        return False, "proxy_protocol"
    if getattr(cfg, "permit_obsolete_folding", False):
        return False, "permit_obsolete_folding"
    if getattr(cfg, "strip_header_spaces", False):
        return False, "strip_header_spaces"
    return True, None


def _ascii_upper_names(names):
    # gunicorn compares upper-cased header names with these names as given:
    # a name that is not upper-case ASCII can never match.
    out = []
    for n in names:
        if isinstance(n, str) and n.isascii() and n == n.upper():
            out.append(n.encode("ascii"))
    return out


cdef class ParserConfig:
    """gunicorn settings that change parsing, compiled once per worker."""

    def __init__(self, cfg, multithread=False, script_name=None):
        self.cfg = cfg
        line = cfg.limit_request_line
        if line < 0 or line >= MAX_REQUEST_LINE:
            line = MAX_REQUEST_LINE
        self.limit_request_line = line
        fields = cfg.limit_request_fields
        if fields <= 0 or fields > MAX_HEADERS:
            fields = MAX_HEADERS
        self.limit_request_fields = fields
        size = cfg.limit_request_field_size
        if size <= 0:
            size = DEFAULT_MAX_HEADERFIELD_SIZE
        self.limit_request_field_size = size
        self.max_buffer_headers = fields * (size + 2) + 4
        self.permit_unconventional_method = bool(cfg.permit_unconventional_http_method)
        self.permit_unconventional_version = bool(cfg.permit_unconventional_http_version)
        self.casefold_method = bool(cfg.casefold_http_method)
        hm = cfg.header_map
        self.header_map = (HEADER_MAP_DROP if hm == "drop" else
                           HEADER_MAP_DANGEROUS if hm == "dangerous" else HEADER_MAP_REFUSE)
        self.secure_scheme_headers = dict(cfg.secure_scheme_headers or {})
        self.secure_names = _ascii_upper_names(self.secure_scheme_headers)
        # which name lengths can be one of them: most headers skip the
        # comparisons with a bit test
        self.secure_lengths = 0
        for nb in self.secure_names:
            self.secure_lengths |= 1ULL << (len(nb) if len(nb) < 63 else 63)
        # and which known names are among them
        self.secure_known = 0
        for k in range(_NKNOWN):
            if _KNOWN[k][0] in self.secure_names:
                self.secure_known |= 1ULL << k
        self.forwarder_headers = list(cfg.forwarder_headers or [])
        self.forwarder_all = "*" in self.forwarder_headers
        self.forwarder_names = _ascii_upper_names(self.forwarder_headers)
        self.allow_ips = list(cfg.forwarded_allow_ips or [])
        self.allow_all = "*" in self.allow_ips
        self.allow_networks = list(cfg.forwarded_allow_networks()) if not self.allow_all else []
        self.trust_cache = {}
        self.is_ssl = bool(cfg.is_ssl)
        self.default_scheme = _HTTPS if self.is_ssl else _HTTP
        self.script_name = os.environ.get("SCRIPT_NAME", "") if script_name is None else script_name
        self.base_environ = _presized({
            "wsgi.errors": WSGIErrorsWrapper(cfg),
            "wsgi.version": (1, 0),
            "wsgi.multithread": bool(multithread),
            "wsgi.multiprocess": cfg.workers > 1,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
        }, _PER_REQUEST)

    def __dealloc__(self):
        cdef Py_ssize_t k
        for k in range(_NKNOWN):
            Py_XDECREF(self.shared_values[k])
            self.shared_values[k] = NULL

    def renew_error_stream(self):
        """gunicorn builds wsgi.errors per request from the log handlers'
        streams; this one is built once, so after the logs are reopened
        (SIGUSR1) it must be built again."""
        self.base_environ = _presized(self.base_environ, {"wsgi.errors": WSGIErrorsWrapper(self.cfg)})

    cdef bint peer_trusted(self, object peer_addr):
        # gunicorn: a peer that is not an (ip, port) tuple (a unix socket) is
        # trusted; otherwise its address must be in forwarded_allow_ips.
        if not isinstance(peer_addr, tuple):
            return True
        if self.allow_all:
            return True
        host = peer_addr[0]
        known = self.trust_cache.get(host)
        if known is not None:
            return known
        trusted = False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            for net in self.allow_networks:
                if ip in net:
                    trusted = True
                    break
        # a connection per request must not pay for parsing its address;
        # bounded, since peers come and go
        if len(self.trust_cache) >= 4096:
            self.trust_cache.clear()
        self.trust_cache[host] = trusted
        return trusted


cdef class Request:
    """What gunicorn's hooks and access log expect of a request."""

    def __init__(self):
        self.proxy_protocol_info = None

    @property
    def trailers(self):
        # only a chunked body can have trailers: no list is made for others
        if self._trailers is None:
            self._trailers = []
        return self._trailers

    @trailers.setter
    def trailers(self, value):
        self._trailers = value

    @property
    def headers(self):
        if self._headers is None:
            self._headers = self._header_list()
        return self._headers

    @headers.setter
    def headers(self, value):
        self._headers = value

    def _header_list(self):
        # The head was validated when it was parsed; rebuild the (NAME, value)
        # list gunicorn keeps, without the headers header_map dropped.
        if self._head is None:
            return []
        out = []
        cdef ParserConfig config = self._config
        block = self._head[self._head_start:self._head_end].decode("latin-1")
        if not block:
            return out
        for line in block.split("\r\n"):
            name, value = line.split(":", 1)
            name = name.upper()
            if "_" in name and config.header_map == HEADER_MAP_DROP:
                if not (self._trusted and (config.forwarder_all or name in config.forwarder_headers)):
                    continue
            out.append((name, value.strip(" \t")))
        return out

    cpdef bint should_close(self):
        if self.must_close:
            return True
        if self.method == "CONNECT":
            return True
        if self.conn_state == CONN_CLOSE:
            return True
        if self.conn_state == CONN_KEEPALIVE:
            return False
        return self.version <= _V10

    def force_close(self):
        self.must_close = True

    @property
    def limit_request_field_size(self):
        return self._config.limit_request_field_size if self._config is not None else 0

    @property
    def max_buffer_headers(self):
        return self._config.max_buffer_headers if self._config is not None else 0


# CoopSource receives small reads here and copies them out before anything
# else runs (the GIL is held throughout). Not on the C stack: a greenlet's
# stack is copied away and back at every switch, and the wait for the next
# request is one.
cdef char _small_recv[SMALL_RECV]


cdef class CoopSource:
    """``recv(n)`` of a gevent socket, for a parser in pull mode, without
    gevent's Python layer.

    gevent's ``socket.recv`` tries the system call, and when nothing is there
    raises and catches an ``OSError`` (EAGAIN) before it waits in the hub: on
    a keep-alive connection that is every request. Here the system call is
    made on the descriptor (non-blocking, as gevent keeps it) and an empty
    socket is waited for with the socket's own ``_wait``, as gevent's recv
    does, or, given ``watcher`` (the loop's io watcher for the descriptor)
    and ``hub``, with that watcher, kept started for the connection's life
    (``waiter_class`` is accepted and not used). A ``timeout`` of 0 on the socket
    raises as gevent's recv does.

    With a watcher, a wait is what a gevent Waiter does (the waiting greenlet
    switches to the hub; the watcher's callback, in the hub, switches back),
    without a Waiter and its bound methods per wait: the hub's ``switch``,
    the callback and the waiting greenlet's ``switch`` are bound once and
    kept. A request's objects live while it waits (the next request of a
    keep-alive connection, the application's own waits): each one fewer per
    request is an object fewer that the cyclic collector finds alive, counts
    towards its next run and promotes.

    ``timer`` (a gevent loop timer whose repeat is its time) bounds ``RequestParser.next_request()``
    as gunicorn's gevent worker bounds it with ``gevent.Timeout(keepalive)``,
    without a Timeout object per request: the timer is started only when the
    parser has to wait, and when it fires ``expired`` is thrown into
    ``greenlet``. Reading a body (the application's ``wsgi.input``) is never
    timed, as with gevent.
    """

    def __init__(self, sock, timer=None, greenlet=None, expired=None, watcher=None,
                 waiter_class=None, hub=None):
        self.sock = sock
        self.timer = timer
        self.greenlet = greenlet
        self.expired = expired
        if watcher is not None:
            # One read watcher for the connection's life, started once.
            # gevent's socket starts its watcher for each wait and stops it
            # after: when the application then waits elsewhere (a database,
            # a sleep) for a turn of the loop, libev forgets the descriptor
            # and the next wait costs an epoll_ctl that fails (EEXIST).
            self.watcher = watcher
            self.waiter_class = waiter_class
            self.hub = hub
            from greenlet import getcurrent
            self.getcurrent = getcurrent
            self.readable_cb = self._readable
            watcher.start(self.readable_cb)

    def _readable(self):
        # in the hub
        if self.waiting is not None:
            # as Waiter.switch: an error here is the hub's to report, as for
            # any callback of the loop
            self.switch_to()
        else:
            # readable while nobody waits (a pipelined request, the client
            # gone): level-triggered, it would fire on every turn of the
            # loop; the next wait looks at it again
            self.watcher.stop()

    def close(self):
        """Stop and free the read watcher (before the socket is closed)."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        # what was bound for the waits refers to this source or its greenlet
        self.readable_cb = self.switch_to = self.switch_owner = None
        self.hub_switch = self.throw_cb = None

    def recv(self, Py_ssize_t size):
        return self._recv(size)

    cdef bytes _recv(self, Py_ssize_t size):
        cdef bytes data
        cdef PyObject *raw
        cdef ssize_t n
        cdef int fd, err
        sock = self.sock
        if self.wait_first:
            self.wait_first = False
            if sock.timeout is None:
                self._wait(sock)
        while True:
            # fileno() each time: a socket closed meanwhile must fail (EBADF),
            # never read a descriptor number reused since. gevent's fileno()
            # is this, in a Python frame (a closed one has a stand-in whose
            # fileno() is -1).
            fd = sock._sock.fileno()
            if size <= SMALL_RECV:
                n = recv(fd, _small_recv, <size_t>size, MSG_DONTWAIT)
                if n >= 0:
                    return PyBytes_FromStringAndSize(_small_recv, n)
                err = errno
            else:
                raw = _bytes_new(NULL, size)
                if raw == NULL:
                    raise MemoryError()
                n = recv(fd, PyBytes_AS_STRING(<object>raw), <size_t>size, MSG_DONTWAIT)
                if n >= 0:
                    # shrunk in place, as socket.recv does
                    if n < size and _PyBytes_Resize(&raw, n) < 0:
                        raise MemoryError()
                    data = <bytes>raw
                    Py_DECREF(raw)
                    return data
                err = errno
                Py_DECREF(raw)
            if err == EINTR:
                continue
            if err != EAGAIN or sock.timeout == 0.0:
                # OSError picks the subclass (ConnectionResetError...)
                raise OSError(err, os.strerror(err))
            self._wait(sock)

    cdef int _wait(self, sock) except -1:
        if self.timing and not self.armed:
            if self.throw_cb is None:
                self.throw_cb = self.greenlet.throw
            # again(), not start(): a libev timer started after stop()
            # would only have what was left of its time
            self.timer.again(self.throw_cb, self.expired, update=True)
            self.armed = True
        watcher = self.watcher
        if watcher is None or sock._read_event is None:
            # (a socket closed meanwhile: gevent raises what it raises)
            sock._wait(sock._read_event)
            return 0
        if not watcher.active:
            watcher.start(self.readable_cb)
        current = self.getcurrent()
        if current is not self.switch_owner:
            self.switch_to = current.switch
            self.switch_owner = current
        if self.hub_switch is None:
            self.hub_switch = self.hub.switch
        self.waiting = current
        try:
            self.hub_switch()
        finally:
            self.waiting = None
        return 0

    cdef int _stop_timing(self) except -1:
        self.timing = False
        if self.armed:
            self.armed = False
            self.timer.stop()
        return 0


cdef class RequestParser:
    """Parses the requests of one connection.

    Pull mode: ``next_request()`` receives from ``source`` (anything with
    ``recv(n)``, normally the client socket) and mirrors gunicorn's
    ``Parser.__next__``. Push mode: ``feed(data)``/``feed_eof()`` then
    ``parse()``, which returns the environ or None while the head is
    incomplete.
    """

    def __cinit__(self):
        _made[LIVE_PARSER] += 1

    def __dealloc__(self):
        _freed[LIVE_PARSER] += 1
        cdef Py_ssize_t i
        for i in range(_NCONN_KNOWN):
            Py_XDECREF(self.conn_values[i])
            self.conn_values[i] = NULL
        PyMem_Free(self.tmpl_values)
        self.tmpl_values = NULL

    def __init__(self, ParserConfig config, source, peer_addr, server_addr, sock=None):
        self.config = config
        self.source = source
        self.sock = sock
        self.peer_addr = peer_addr
        self.server_addr = server_addr
        self.buf = b""
        self.pos = 0
        self.state = ST_BEGIN
        self.trusted = config.peer_trusted(peer_addr)
        self.last_mask = NO_MASK
        # REMOTE_* and, for TCP listeners, SERVER_* are fixed per connection.
        if isinstance(peer_addr, str):
            self.remote_addr_str = peer_addr
            self.remote_port_str = None
        elif isinstance(peer_addr, bytes):
            self.remote_addr_str = peer_addr.decode()
            self.remote_port_str = None
        else:
            self.remote_addr_str = peer_addr[0]
            self.remote_port_str = _port_str(peer_addr[1])
        if not isinstance(server_addr, str):
            # the workers pass the same object for each connection of a
            # listener: its SERVER_PORT str is made once
            if server_addr is not config.server_addr:
                config.server_addr = server_addr
                config.server_port = _port_str(server_addr[1])
            self.server_name = server_addr[0]
            self.server_port = config.server_port
        # what every request of this connection has in common; the copy
        # keeps the table sized for a whole request (see _presized)
        base = PyDict_Copy(config.base_environ)
        base[K_SOCKET] = sock
        base[K_REMOTE_ADDR] = self.remote_addr_str
        if self.remote_port_str is not None:
            base[K_REMOTE_PORT] = self.remote_port_str
        else:
            del base[K_REMOTE_PORT]
        if self.server_name is not None:
            base[K_SERVER_NAME] = self.server_name
            base[K_SERVER_PORT] = self.server_port
        self.base_environ = base

    # -- receiving -------------------------------------------------------

    def feed(self, data):
        """Append received bytes (bytes, bytearray or memoryview)."""
        if len(data):
            self._append(bytes(data) if type(data) is not bytes else data)

    def feed_eof(self):
        self.eof = True

    cdef _append(self, data):
        cdef Py_ssize_t shift
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self.buf)
        if self.pos >= n:
            shift = n
            self.buf = data
        elif self.pos > 0:
            shift = self.pos
            self.buf = self.buf[self.pos:] + data
        else:
            shift = 0
            self.buf = self.buf + data
        if shift:
            self.pos -= shift
            self.line_start -= shift
            self.hdr_start -= shift
            self.scan -= shift
        if self.state == ST_HEADERS:
            self.resumed = True

    cdef bint _fill(self, Py_ssize_t hint) except -1:
        """Receive once more from the source; False at the end of input."""
        cdef Py_ssize_t size = RECV_SIZE
        if self.eof or self.source is None:
            self.eof = True
            return False
        if hint > size:
            size = hint if hint < MAX_BODY_CHUNK else MAX_BODY_CHUNK
        if type(self.source) is CoopSource:
            data = (<CoopSource>self.source)._recv(size)
        else:
            data = self.source.recv(size)
        if not data:
            self.eof = True
            return False
        self._append(data if type(data) is bytes else bytes(data))
        return True

    # -- requests --------------------------------------------------------

    def parse(self, data=None):
        """Parse the next request head from what was fed (``data``, if given,
        is fed first: one call instead of two for each read).

        Returns the environ, None if more bytes are needed, or STOP when the
        input ended cleanly before a request began.
        """
        if data is not None and len(data):
            self._append(bytes(data) if type(data) is not bytes else data)
        if self.state == ST_BODY:
            if not self._finish_buffered():
                return None
        return self._parse_head()

    def next_request(self):
        """The environ of the next request, or None where gunicorn stops.

        With a ``CoopSource`` that has a timer, the time this takes is
        bounded (see ``CoopSource``)."""
        cdef CoopSource src
        if type(self.source) is CoopSource:
            src = <CoopSource>self.source
            if self.req is not None and PyBytes_GET_SIZE(self.buf) <= self.pos:
                # The next request of a keep-alive connection, nothing of it
                # received yet: it can hardly be there already (its client
                # was just answered), so wait in the hub before trying to
                # receive. That saves a recv that fails, and above all the
                # greenlet goes back to the end of the hub's line: a client
                # answering fast must not have its connection served again
                # and again while the others wait (the tail latency).
                src.wait_first = True
            src.timing = src.timer is not None
            try:
                return self._next_request()
            finally:
                src.wait_first = False
                src._stop_timing()
        return self._next_request()

    cdef object _next_request(self):
        if self.req is not None:
            if self.req.should_close():
                return None
            if not self.finish_body():
                return None
        while True:
            env = self._parse_head()
            if env is STOP:
                return None
            if env is not None:
                return env
            self._fill(0)

    def at_rest(self):
        """True when every byte received belongs to a request that was read
        completely: nothing of the client's is left unread here."""
        if PyBytes_GET_SIZE(self.buf) > self.pos:
            return False
        if self.state == ST_BODY and self.req is not None:
            return (<Body>self.req.body)._is_done()
        return self.state == ST_BEGIN

    def close(self):
        """Forget the current request (call when the connection ends)."""
        self.req = None
        self.buf = b""
        self.pos = 0

    def finish_body(self):
        """Discard the unread body of the current request.

        False when that cannot be done (the body was malformed), and the
        connection must not be reused.
        """
        if self.req is None or self.state != ST_BODY:
            return True
        cdef Body body = self.req.body
        if body.failed:
            return False
        while body._read(READ_STEP):
            pass
        self.state = ST_BEGIN
        return True

    cdef bint _finish_buffered(self) except -1:
        # push mode: the previous request's body must be complete in the buffer
        cdef Body body = self.req.body
        if body.failed:
            raise RuntimeError("the previous request's body was malformed")
        if body.kind == BODY_LENGTH and body.remaining == 0:
            self.state = ST_BEGIN
            return True
        if body.kind == BODY_LENGTH and PyBytes_GET_SIZE(self.buf) - self.pos < body.remaining:
            return False
        body.read()
        self.state = ST_BEGIN
        return True

    cdef object _parse_head(self):
        cdef ParserConfig cfg = self.config
        cdef const char *p = PyBytes_AS_STRING(self.buf)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(self.buf)
        cdef Py_ssize_t s, i, limit, hs, h_end, body_start, rl_end
        cdef const char *hit

        if self.state == ST_BEGIN:
            s = self.pos
            if s >= end:
                return STOP if self.eof else None
            # RFC 9112 2.2: one CRLF before the request line is ignored.
            if p[s] == b'\r':
                if end - s < 2:
                    if self.eof:
                        raise NoMoreData(self.buf[s:end])
                    return None
                if p[s + 1] == b'\n':
                    s += 2
            self.line_start = s
            self.scan = s
            self.state = ST_LINE

        if self.state == ST_LINE:
            s = self.line_start
            limit = cfg.limit_request_line
            hit = <const char *>memchr(p + self.scan, c'\n', end - self.scan)
            if hit == NULL:
                if limit > 0 and (end - s) - 2 > limit:
                    raise LimitRequestLine(end - s, limit)
                if self.eof:
                    raise NoMoreData(self.buf[s:end])
                self.scan = end
                return None
            i = hit - p
            if i == s or p[i - 1] != b'\r':
                raise InvalidRequestLine("bare LF as line terminator")
            rl_end = i - 1
            if limit > 0 and rl_end - s > limit:
                raise LimitRequestLine(rl_end - s, limit)
            self._request_line(p, rl_end)
            self.hdr_start = i + 1
            self.scan = i + 1
            self.resumed = False
            self.state = ST_HEADERS

        # ST_HEADERS
        hs = self.hdr_start
        if self.resumed:
            self.resumed = False
            if end - hs > cfg.max_buffer_headers:
                raise LimitRequestHeaders("max buffer headers")
        if end - hs >= 2 and p[hs] == b'\r' and p[hs + 1] == b'\n':
            h_end = hs
            body_start = hs + 2
        else:
            i = self.scan - 3
            if i < hs:
                i = hs
            h_end = tw_find_head_end(p, i, end)
            if h_end < 0:
                # RFC 9112 2.2: a bare LF means this head can never end the
                # way it is read; refuse it now instead of waiting for more.
                i = self.scan if self.scan > hs else hs
                while True:
                    hit = <const char *>memchr(p + i, c'\n', end - i)
                    if hit == NULL:
                        break
                    i = hit - p
                    if i == hs or p[i - 1] != b'\r':
                        raise InvalidHeader("bare LF as line terminator")
                    i += 1
                if self.eof:
                    raise NoMoreData(self.buf[hs:end])
                self.scan = end
                return None
            body_start = h_end + 4
        env = self._build(p, hs, h_end)
        self.pos = body_start
        self.state = ST_BODY
        return env

    cdef _request_line(self, const char *p, Py_ssize_t rl_end):
        """Validate the request line as soon as it is complete, as gunicorn does."""
        cdef ParserConfig cfg = self.config
        cdef Py_ssize_t s = self.line_start
        cdef Py_ssize_t sp1, sp2, i, j, a, b, colon, vs, ve, n, k
        cdef const char *hit
        cdef unsigned char c
        cdef int kind, major, minor, percent
        cdef Py_ssize_t qpos, hpos
        cdef bytes nb
        cdef str method, uri, path, query, fragment

        self.req_count += 1
        cdef Request req = Request.__new__(Request)
        req.cfg = cfg.cfg
        req._config = cfg
        req._trusted = self.trusted
        req.peer_addr = self.peer_addr
        req.remote_addr = self.peer_addr
        req.req_number = self.req_count
        req.scheme = cfg.default_scheme
        self.req = req

        # -- request line: method SP target SP version ----------------------
        hit = <const char *>memchr(p + s, c' ', rl_end - s)
        if hit != NULL:
            sp1 = hit - p
            hit = <const char *>memchr(p + sp1 + 1, c' ', rl_end - sp1 - 1)
        if hit == NULL:
            raise InvalidRequestLine(_latin1(p + s, rl_end - s))
        sp2 = hit - p

        n = sp1 - s
        # GET, POST and HEAD (upper-case token characters, 3 or 4 long) pass
        # every check of a method
        if n == 3 and memcmp(p + s, b"GET", 3) == 0:
            method = _GET
        elif n == 4 and memcmp(p + s, b"POST", 4) == 0:
            method = _POST
        elif n == 4 and memcmp(p + s, b"HEAD", 4) == 0:
            method = _HEAD
        else:
            if not cfg.permit_unconventional_method:
                for i in range(s, sp1):
                    c = <unsigned char>p[i]
                    if (97 <= c <= 122) or c == 35:
                        raise InvalidRequestMethod(_latin1(p + s, n))
                if n < 3 or n > 20:
                    raise InvalidRequestMethod(_latin1(p + s, n))
            if n == 0:
                raise InvalidRequestMethod(_EMPTY)
            for i in range(s, sp1):
                if not TOKEN_CHARS[<unsigned char>p[i]]:
                    raise InvalidRequestMethod(_latin1(p + s, n))
            m = _METHODS.get(PyBytes_FromStringAndSize(p + s, n)) if n <= 7 else None
            method = <str>m if m is not None else _latin1(p + s, n)
        if cfg.casefold_method:
            method = method.upper()
        req.method = method

        a = sp1 + 1
        b = sp2
        if a == b or tw_scan_target(p, a, b, PyBytes_GET_SIZE(self.buf), &qpos, &hpos, &percent) < 0:
            raise InvalidRequestLine(_latin1(p + s, rl_end - s))
        uri = _ascii(p + a, b - a)
        req.uri = uri
        # PATH_INFO is the path unquoted: nothing to do without a '%'
        self.path_quoted = percent != 0
        if p[a] == b'/':
            # origin-form: what urllib.parse.urlsplit yields, without it
            j = hpos
            fragment = _ascii(p + j + 1, b - j - 1) if j < b else _EMPTY
            if qpos < j:
                query = _ascii(p + qpos + 1, j - qpos - 1)
                path = _ascii(p + a, qpos - a)
            else:
                query = _EMPTY
                path = uri if j == b else _ascii(p + a, j - a)
        else:
            self.path_quoted = True
            if (b - a == 1 and p[a] == b'*') and method != "OPTIONS":
                raise InvalidRequestLine(_latin1(p + s, rl_end - s))
            if method != "CONNECT" and uri != "*" and "://" not in uri:
                raise InvalidRequestLine(_latin1(p + s, rl_end - s))
            try:
                parts = split_request_uri(uri)
            except ValueError:
                raise InvalidRequestLine(_latin1(p + s, rl_end - s))
            path = parts.path or _EMPTY
            query = parts.query or _EMPTY
            fragment = parts.fragment or _EMPTY
        req.path = path
        req.query = query
        req.fragment = fragment

        n = rl_end - sp2 - 1
        a = sp2 + 1
        if (n != 8 or memcmp(p + a, b"HTTP/", 5) != 0 or p[a + 6] != b'.'
                or not (48 <= <unsigned char>p[a + 5] <= 57)
                or not (48 <= <unsigned char>p[a + 7] <= 57)):
            raise InvalidHTTPVersion(_latin1(p + a, n))
        major = p[a + 5] - 48
        minor = p[a + 7] - 48
        if major == 1 and minor == 1:
            req.version = _V11
            protocol = _HTTP11
        elif major == 1 and minor == 0:
            req.version = _V10
            protocol = _HTTP10
        else:
            req.version = (major, minor)
            protocol = "HTTP/%d.%d" % (major, minor)
            if major != 1 and not cfg.permit_unconventional_version:
                raise InvalidHTTPVersion(req.version)
        req.protocol = protocol

    cdef object _build(self, const char *p, Py_ssize_t h_start, Py_ssize_t h_end):
        """Validate the header block of self.req; return the environ."""
        cdef ParserConfig cfg = self.config
        cdef Request req = self.req
        cdef Py_ssize_t i, j, a, b, colon, vs, ve, n, k
        cdef const char *hit
        cdef unsigned char c
        cdef int kind
        cdef Py_ssize_t kept = 0
        cdef bint seen_host = False, seen_ctype = False, scheme_set = False
        cdef bint underscore, found
        cdef Py_ssize_t bad, lim
        cdef unsigned int high
        cdef unsigned char u, und
        cdef char upname[NAME_BUF + 16]
        cdef Py_ssize_t buf_end = PyBytes_GET_SIZE(self.buf)
        cdef Py_ssize_t known, n_last
        cdef PyObject *last
        cdef PyObject **slot = NULL
        cdef unsigned char share
        cdef object key, value, old
        cdef char *kp
        cdef bytes nb
        cdef str path = req.path
        req._head = self.buf
        req._head_start = h_start
        req._head_end = h_end

        # -- header fields ----------------------------------------------------
        # The connection's base environ keeps the values of the previous
        # request for the keys below; one is set again only when it changed
        # (compared by identity: the parser hands out the same interned
        # objects for the same method, protocol, scheme and empty strings).
        # QUERY_STRING is "" there: a query is new on nearly every request,
        # set in the environ alone.
        cdef dict base = self.base_environ
        cdef dict tmpl = self.template
        if req.method is not self.last_method:
            base[K_METHOD] = self.last_method = req.method
            if tmpl is not None:
                tmpl[K_METHOD] = req.method
        if req.protocol is not self.last_protocol:
            base[K_PROTOCOL] = self.last_protocol = req.protocol
            if tmpl is not None:
                tmpl[K_PROTOCOL] = req.protocol
        host = None
        script_name = cfg.script_name
        framing = None          # [(is_te, value)] for Content-Length / Transfer-Encoding
        cdef Py_ssize_t limit_fields = cfg.limit_request_fields
        cdef Py_ssize_t limit_size = cfg.limit_request_field_size
        # The fields go into the environ after the loop (_environ), when it is
        # known which of them the request has: recorded here in order, each
        # key and value holding a reference.
        cdef dict env = None
        # no template to use or make (the first request of a connection):
        # the fields go into the environ as they come
        cdef bint direct = self.template is None and self.last_mask == NO_MASK
        if self.tmpl_pause > 0:
            # the template did not pay lately (see _environ)
            self.tmpl_pause -= 1
            direct = True
        cdef Py_ssize_t size
        if direct:
            env = PyDict_Copy(base)
        cdef PyObject *op_key[FIELDS_AT_ONCE]
        cdef PyObject *op_value[FIELDS_AT_ONCE]
        cdef signed char op_known[FIELDS_AT_ONCE]
        cdef Py_ssize_t nops = 0
        cdef uint64_t mask = 0, bit
        cdef bint regular = True
        cdef signed char kidx
        try:
            a = h_start
            while a < h_end:
                if kept >= limit_fields:
                    raise LimitRequestHeaders("limit request headers fields")
                # The name: token characters up to the colon. Its upper-case
                # form, up to the colon, is first looked up among the known
                # names, which are made of token characters: found there, it
                # needs no check of its own.
                n = tw_upper_name(p, a, buf_end, upname, NAME_BUF)
                key = None
                known = -1
                if n > 0 and a + n < h_end:
                    memset(upname + n, 0, 8)
                    known = _lookup_known(upname, n)
                if known >= 0:
                    kind = _KNOWN_KIND[known]
                    if _KNOWN_KEY[known] != NULL:
                        key = <object>_KNOWN_KEY[known]
                    underscore = kind == H_SCRIPT_NAME
                else:
                    kind = H_OTHER
                    und = 0
                    i = a
                    lim = a + NAME_BUF if h_end - a > NAME_BUF else h_end
                    while i < lim:
                        u = UPNAME[<unsigned char>p[i]]
                        if u == 0:
                            break
                        und |= u == 95
                        i += 1
                    if i == lim:
                        # a long name: only checked
                        while i < h_end and UPNAME[<unsigned char>p[i]]:
                            und |= p[i] == b'_'
                            i += 1
                    underscore = und != 0
                    if i == a or i >= h_end or p[i] != b':':
                        _bad_header_line(p, a, _line_end(p, a, h_end))
                    n = i - a
                colon = a + n
                # the value, up to CRLF: whole words at a time while no byte can
                # be a control character; note the first forbidden byte
                bad = -1
                high = 0
                vs = colon + 1
                while vs < h_end and (p[vs] == b' ' or p[vs] == b'\t'):
                    vs += 1
                value = None
                share = _KNOWN_SHARED[known] if known >= 0 else SHARE_NONE
                if share != SHARE_NONE:
                    # The bytes of the value this header had last, then CRLF: that
                    # value was checked and trimmed when it was first seen, so
                    # these bytes need no scan.
                    slot = (&cfg.shared_values[known] if share == SHARE_WORKER else
                            &self.conn_values[_CONN_SLOT[known]])
                    last = slot[0]
                    if last != NULL:
                        n_last = PyUnicode_GET_LENGTH(<object>last)
                        b = vs + n_last
                        if (b <= h_end and p[b] == b'\r' and p[b + 1] == b'\n'
                                and memcmp(PyUnicode_DATA(<object>last), p + vs, n_last) == 0):
                            value = <object>last
                            ve = b
                if value is None:
                    j = vs
                    while True:
                        # stops at the CR of the head's end at the latest
                        j = tw_find_ctl(p, j, buf_end, &high)
                        if j >= h_end:
                            b = h_end
                            break
                        if p[j] == b'\r' and j + 1 < h_end and p[j + 1] == b'\n':
                            b = j
                            break
                        if bad < 0:
                            bad = j
                        j += 1
                    ve = b
                    while ve > vs and (p[ve - 1] == b' ' or p[ve - 1] == b'\t'):
                        ve -= 1
                if b + 2 < h_end and (p[b + 2] == b' ' or p[b + 2] == b'\t'):
                    raise ObsoleteFolding(_latin1(p + a, n).upper())
                if bad >= 0:
                    raise InvalidHeader(_latin1(p + a, n).upper())
                if (b - a) + 2 > limit_size:
                    raise LimitRequestHeaders("limit request headers fields size")

                if value is not None:
                    pass
                elif share != SHARE_NONE and ve - vs <= (SHARED_VALUE_MAX if share == SHARE_WORKER
                                                         else CONNECTION_VALUE_MAX):
                    value = _new_shared_value(slot, p + vs, ve - vs, not (high & 0x80))
                elif not (high & 0x80):
                    value = _ascii(p + vs, ve - vs)
                else:
                    value = _latin1(p + vs, ve - vs)

                # gunicorn HeaderPolicy, in its order
                if kind == H_HOST:
                    if seen_host:
                        raise InvalidHeader("HOST", req=req)
                    seen_host = True
                elif kind == H_CONTENT_TYPE:
                    if seen_ctype:
                        raise InvalidHeader("CONTENT-TYPE", req=req)
                    seen_ctype = True
                elif kind == H_EXPECT:
                    if (<str>value).lower() == "100-continue":
                        if req.version >= _V11:
                            req._expected_100_continue = True
                    else:
                        raise ExpectationFailed(value)
                if self.trusted and (((cfg.secure_known >> known) & 1) if known >= 0 else
                                     ((cfg.secure_lengths >> (n if n < 63 else 63)) & 1)):
                    for nb in cfg.secure_names:
                        if _ci_equal(p + a, n, PyBytes_AS_STRING(nb), PyBytes_GET_SIZE(nb)):
                            scheme = _HTTPS if value == cfg.secure_scheme_headers[nb.decode()] else _HTTP
                            if scheme_set:
                                if scheme != req.scheme:
                                    raise InvalidSchemeHeaders()
                            else:
                                scheme_set = True
                                req.scheme = scheme
                            break
                if underscore:
                    found = False
                    if self.trusted:
                        if cfg.forwarder_all:
                            found = True
                        else:
                            for nb in cfg.forwarder_names:
                                if _ci_equal(p + a, n, PyBytes_AS_STRING(nb), PyBytes_GET_SIZE(nb)):
                                    found = True
                                    break
                    if not found:
                        if cfg.header_map == HEADER_MAP_DROP:
                            a = b + 2
                            continue
                        elif cfg.header_map != HEADER_MAP_DANGEROUS:
                            raise InvalidHeaderName(_latin1(p + a, n).upper())
                kept += 1

                if kind == H_CONTENT_LENGTH:
                    if framing is None:
                        framing = []
                    framing.append((False, value))
                elif kind == H_HOST:
                    host = value
                elif kind == H_SCRIPT_NAME:
                    script_name = value
                elif kind == H_TRANSFER_ENCODING:
                    if framing is None:
                        framing = []
                    framing.append((True, value))
                elif kind == H_CONNECTION:
                    if req.conn_state == CONN_NONE:
                        # gunicorn: value.lower() == "close" / "keep-alive"
                        req.conn_state = (CONN_CLOSE if _ci_equal(p + vs, ve - vs, "CLOSE", 5) else
                                          CONN_KEEPALIVE if _ci_equal(p + vs, ve - vs, "KEEP-ALIVE", 10)
                                          else CONN_OTHER)
                kidx = -1
                if known >= 0:
                    key = <object>_KNOWN_ENVKEY[known]
                    if _KNOWN_IN_TEMPLATE[known]:
                        bit = (<uint64_t>1) << known
                        if mask & bit:
                            regular = False
                        mask |= bit
                        kidx = <signed char>known
                    else:
                        regular = False
                else:
                    # a name with '_' can make the key of a known name
                    if underscore:
                        regular = False
                    key = PyUnicode_New(5 + n, 127)
                    kp = <char *>PyUnicode_DATA(key)
                    kp[0] = b'H'; kp[1] = b'T'; kp[2] = b'T'; kp[3] = b'P'; kp[4] = b'_'
                    for i in range(n):
                        c = _upper(<unsigned char>p[a + i])
                        kp[5 + i] = b'_' if c == 45 else c
                if direct:
                    if kind == H_CONTENT_TYPE or kind == H_CONTENT_LENGTH:
                        env[key] = value
                    else:
                        # "" is a shared object: whether the key was already there is
                        # told by the size of the dict, not by the identity of the value
                        size = PyDict_GET_SIZE(env)
                        old = <object>PyDict_SetDefault(env, key, value)
                        if PyDict_GET_SIZE(env) == size:
                            env[key] = old + "," + value
                    a = b + 2
                    continue
                if nops == FIELDS_AT_ONCE:
                    # many fields: these go in now, the way any request's can
                    env = self._environ(env, op_key, op_value, op_known, nops, mask, False)
                    while nops > 0:
                        nops -= 1
                        Py_DECREF(op_key[nops])
                        Py_DECREF(op_value[nops])
                Py_INCREF(key)
                Py_INCREF(value)
                op_key[nops] = <PyObject *>key
                op_value[nops] = <PyObject *>value
                op_known[nops] = kidx
                nops += 1
                a = b + 2
            if direct:
                self.last_mask = mask if regular else NO_MASK
            else:
                env = self._environ(env, op_key, op_value, op_known, nops, mask, regular)
        finally:
            while nops > 0:
                nops -= 1
                Py_DECREF(op_key[nops])
                Py_DECREF(op_value[nops])
        env[K_RAW_URI] = req.uri
        if PyUnicode_GET_LENGTH(req.query):
            env[K_QUERY] = req.query

        # -- body framing (gunicorn Message.set_body_reader) -----------------
        cdef Body body = Body.__new__(Body)
        body.parser = self
        body.failed = False
        body.kind = BODY_LENGTH
        body.remaining = 0
        if framing is not None:
            self._framing(req, body, framing)
        body.expect_continue = req._expected_100_continue
        req.body = body
        env[K_INPUT] = body

        # -- the rest of wsgi.create ------------------------------------------
        if req.scheme is not self.last_scheme:
            env[K_SCHEME] = base[K_SCHEME] = self.last_scheme = req.scheme
            if self.template is not None:
                self.template[K_SCHEME] = req.scheme
        if self.server_name is None:
            self._unix_server(env, host, req.scheme)
        if script_name:
            if not path.startswith(script_name):
                raise ConfigurationProblem(
                    "Request path %r does not start with SCRIPT_NAME %r" %
                    (path, script_name))
            path = path[len(script_name):]
        env[K_PATH_INFO] = _unquote(path) if self.path_quoted else path
        if script_name is not self.last_script_name:
            env[K_SCRIPT_NAME] = base[K_SCRIPT_NAME] = self.last_script_name = script_name
            if self.template is not None:
                self.template[K_SCRIPT_NAME] = script_name
        return env

    cdef dict _environ(self, dict env, PyObject **keys, PyObject **values, signed char *known,
                       Py_ssize_t n, uint64_t mask, bint regular):
        """Put n header fields into env (None: a new environ) as wsgi.create
        does: a repeated name joins the values with ",", Content-Type and
        Content-Length replace. known[i] is the field's known header index
        when the connection's template may hold it, else -1; mask has bit k
        for each such header; regular: no header in the request repeats, and
        none is SCRIPT_NAME or has a name with '_' (whose key could be that
        of a known header).

        A browser sends the same headers on every request of a connection,
        most of them with the same values. For a regular request with the
        same known headers as the previous one, the template is made: the
        base environ with those headers' keys and values. The environ of a
        regular request with the template's known headers then starts as a
        copy of it, and a field whose value is the template's (the same
        object: see _new_shared_value) needs nothing more.
        """
        cdef Py_ssize_t i, size, changed
        cdef bint made = False
        cdef signed char k
        cdef dict tmpl
        cdef object key, value, old
        if env is None:
            if regular:
                if (self.template is None or mask != self.tmpl_mask) and mask == self.last_mask:
                    tmpl = PyDict_Copy(self.base_environ)
                    for i in range(n):
                        k = known[i]
                        if k >= 0:
                            PyDict_SetItem(tmpl, <object>keys[i], <object>values[i])
                    tmpl = _str_keyed(tmpl)
                    if self.tmpl_values == NULL:
                        self.tmpl_values = <PyObject **>PyMem_Malloc(_NKNOWN * sizeof(PyObject *))
                        if self.tmpl_values == NULL:
                            raise MemoryError()
                    for i in range(n):
                        k = known[i]
                        if k >= 0:
                            self.tmpl_values[k] = values[i]
                    self.template = tmpl
                    self.tmpl_mask = mask
                    made = True
                self.last_mask = mask
                if self.template is not None and mask == self.tmpl_mask:
                    env = PyDict_Copy(self.template)
                    changed = 0
                    for i in range(n):
                        k = known[i]
                        if k >= 0:
                            # the template's key: replaced unless the same
                            if values[i] != self.tmpl_values[k]:
                                PyDict_SetItem(env, <object>keys[i], <object>values[i])
                                changed += 1
                        else:
                            # a key the template cannot hold
                            key = <object>keys[i]
                            value = <object>values[i]
                            size = PyDict_GET_SIZE(env)
                            old = <object>PyDict_SetDefault(env, key, value)
                            if PyDict_GET_SIZE(env) == size:
                                env[key] = old + "," + value
                    if made:
                        pass
                    elif changed * 2 > PyDict_GET_SIZE(self.template) - PyDict_GET_SIZE(self.base_environ):
                        # Most values differ from the template's (a client
                        # whose values change on every request): replacing
                        # one costs as much as adding it, and the larger copy
                        # costs more. Made again after a pause that doubles
                        # each time this happens again.
                        self.template = None
                        self.tmpl_backoff = (TEMPLATE_PAUSE if self.tmpl_backoff == 0 else
                                             min(self.tmpl_backoff * 2, TEMPLATE_PAUSE_MAX))
                        self.tmpl_pause = self.tmpl_backoff
                    else:
                        self.tmpl_backoff = 0
                    return env
            else:
                self.last_mask = NO_MASK
            env = PyDict_Copy(self.base_environ)
        for i in range(n):
            key = <object>keys[i]
            value = <object>values[i]
            k = known[i]
            if k >= 0 and (_KNOWN_KIND[k] == H_CONTENT_TYPE or _KNOWN_KIND[k] == H_CONTENT_LENGTH):
                env[key] = value
                continue
            # "" is a shared object: whether the key was already there is told
            # by the size of the dict, not by the identity of the value
            size = PyDict_GET_SIZE(env)
            old = <object>PyDict_SetDefault(env, key, value)
            if PyDict_GET_SIZE(env) == size:
                env[key] = old + "," + value
        return env

    cdef _framing(self, Request req, Body body, list framing):
        cdef bint chunked = False, transfer_encoding = False
        content_length = None
        for is_te, value in framing:
            if not is_te:
                if content_length is not None:
                    raise InvalidHeader("CONTENT-LENGTH", req=req)
                content_length = value
                continue
            transfer_encoding = True
            for val in (<str>value).split(","):
                val = val.strip(" \t").lower()
                if val == "chunked":
                    # stacked chunking is never intended
                    if chunked:
                        raise InvalidHeader("TRANSFER-ENCODING", req=req)
                    chunked = True
                elif val == "identity":
                    if chunked:
                        raise InvalidHeader("TRANSFER-ENCODING", req=req)
                elif val in ("compress", "deflate", "gzip"):
                    if chunked:
                        raise InvalidHeader("TRANSFER-ENCODING", req=req)
                    req.must_close = True
                else:
                    raise UnsupportedTransferCoding(value)
        # RFC 9112 6.3: a request whose codings do not end in chunked has no
        # determinable length.
        if transfer_encoding and not chunked:
            raise InvalidHeader("TRANSFER-ENCODING", req=req)
        if chunked:
            if req.version < _V11:
                raise InvalidHeader("TRANSFER-ENCODING", req=req)
            if content_length is not None:
                raise InvalidHeader("CONTENT-LENGTH", req=req)
            body.kind = BODY_CHUNKED
            body.rbuf = bytearray()
            req._trailers = body.trailers = []
            body.pending = bytearray()
            body.cstate = CH_SIZE
            body.limit_size_line = self.config.limit_request_field_size or DEFAULT_MAX_HEADERFIELD_SIZE
            body.limit_trailers = self.config.max_buffer_headers
        elif content_length is not None:
            if not (<str>content_length).isnumeric():
                raise InvalidHeader("CONTENT-LENGTH", req=req)
            try:
                n = int(content_length)
            except ValueError:
                raise InvalidHeader("CONTENT-LENGTH", req=req)
            body.remaining = n if n < sys.maxsize else sys.maxsize

    cdef _unix_server(self, dict env, host, scheme):
        # gunicorn derives SERVER_* for a unix socket listener from Host.
        server = self.server_addr.split(":")
        if len(server) == 1:
            if host:
                server = host.split(":")
                if len(server) == 1:
                    if scheme == "http":
                        server.append(80)
                    elif scheme == "https":
                        server.append(443)
                    else:
                        server.append("")
            else:
                server.append("")
        env[K_SERVER_NAME] = server[0]
        env[K_SERVER_PORT] = str(server[1])

    # -- trailers -------------------------------------------------------------

    cdef list _trailers(self, Py_ssize_t a, Py_ssize_t h_end):
        """Parse a trailer block as gunicorn's parse_headers(from_trailer=True).

        Rare, so written for clarity: the same checks as the header loop of
        _build, in the same order, without its fast paths; no policy but
        header_map applies to trailers.
        """
        cdef ParserConfig cfg = self.config
        cdef const char *p = PyBytes_AS_STRING(self.buf)
        cdef Py_ssize_t b, colon, i, vs, ve
        cdef bint seen_ctype = False, underscore
        cdef list out = []
        while a < h_end:
            b = _line_end(p, a, h_end)
            if len(out) >= cfg.limit_request_fields:
                raise LimitRequestHeaders("limit request headers fields")
            colon = a
            underscore = False
            while colon < b and TOKEN_CHARS[<unsigned char>p[colon]]:
                underscore = underscore or p[colon] == b'_'
                colon += 1
            if colon == a or colon >= b or p[colon] != b':':
                _bad_header_line(p, a, b)
            name = _latin1(p + a, colon - a).upper()
            if name in _FORBIDDEN_TRAILER:
                raise InvalidHeaderName(name)
            vs = colon + 1
            ve = b
            while vs < ve and (p[vs] == b' ' or p[vs] == b'\t'):
                vs += 1
            while ve > vs and (p[ve - 1] == b' ' or p[ve - 1] == b'\t'):
                ve -= 1
            if b + 2 < h_end and (p[b + 2] == b' ' or p[b + 2] == b'\t'):
                raise ObsoleteFolding(name)
            for i in range(vs, ve):
                if VALUE_BAD[<unsigned char>p[i]]:
                    raise InvalidHeader(name)
            if (b - a) + 2 > cfg.limit_request_field_size:
                raise LimitRequestHeaders("limit request headers fields size")
            if name == "CONTENT-TYPE":
                if seen_ctype:
                    raise InvalidHeader(name)
                seen_ctype = True
            if underscore and cfg.header_map != HEADER_MAP_DANGEROUS:
                # forwarder headers are never honoured in a trailer
                if cfg.header_map == HEADER_MAP_DROP:
                    a = b + 2
                    continue
                raise InvalidHeaderName(name)
            out.append((name, _latin1(p + vs, ve - vs)))
            a = b + 2
        return out


cdef inline object _new_shared_value(PyObject **slot, const char *v, Py_ssize_t n, bint ascii):
    # The str of v[:n], kept in *slot as a known header's last value. A str
    # made from bytes, as here, holds them one per character: _build compares
    # its data with the next request's bytes directly.
    cdef PyObject *last = slot[0]
    value = _ascii(v, n) if ascii else _latin1(v, n)
    Py_INCREF(value)
    slot[0] = <PyObject *>value
    Py_XDECREF(last)
    return value


cdef str _unquote(str path):
    # urllib.parse.unquote_to_bytes(path).decode("latin-1"), for a path that
    # holds printable ASCII only (the request line was checked).
    if "%" not in path:
        return path
    cdef bytes raw = path.encode("ascii")
    cdef const char *p = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0, o = 0
    cdef bytearray out = bytearray(n)
    cdef unsigned char hi, lo
    while i < n:
        if p[i] == b'%' and n - i >= 3:
            hi = HEXVAL[<unsigned char>p[i + 1]]
            lo = HEXVAL[<unsigned char>p[i + 2]]
            if hi != 0xFF and lo != 0xFF:
                out[o] = (hi << 4) | lo
                o += 1
                i += 3
                continue
        out[o] = <unsigned char>p[i]
        o += 1
        i += 1
    return out[:o].decode("latin-1")


cdef class Body:
    """wsgi.input: reads the request body as gunicorn's Body does."""

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration()
        return line

    cdef bint _is_done(self):
        if self.kind == BODY_LENGTH:
            return self.remaining == 0
        return self.cstate == CH_DONE and not self.pending and not self.rbuf

    cdef _send_continue(self):
        # Expect: 100-continue is answered when the application first asks
        # for the body, not before: an app that refuses the request never
        # makes the client send it.
        self.expect_continue = False
        sock = self.parser.sock
        if sock is not None:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    cdef bytes _read(self, Py_ssize_t size):
        """Up to size bytes of body; b"" at its end."""
        cdef RequestParser parser = self.parser
        cdef Py_ssize_t avail, n
        cdef bytes out
        if size <= 0:
            return b""
        if self.expect_continue:
            self._send_continue()
        try:
            if self.kind == BODY_LENGTH:
                # at most one receive: read() gathers the pieces, so a large
                # body never grows one buffer by repeated concatenation
                if size > self.remaining:
                    size = self.remaining
                if size == 0:
                    return b""
                avail = PyBytes_GET_SIZE(parser.buf) - parser.pos
                if avail == 0:
                    if not parser._fill(self.remaining):
                        # the connection ended short of Content-Length
                        self.remaining = 0
                        return b""
                    avail = PyBytes_GET_SIZE(parser.buf) - parser.pos
                n = size if avail >= size else avail
                if n == PyBytes_GET_SIZE(parser.buf) and parser.pos == 0:
                    out = parser.buf
                else:
                    out = parser.buf[parser.pos:parser.pos + n]
                parser.pos += n
                self.remaining -= n
                return out
            return self._chunked_read(size)
        except BaseException:
            self.failed = True
            raise

    cdef bytes _take(self, Py_ssize_t size):
        """Up to size bytes already decoded, without decoding more."""
        cdef bytes out
        if len(self.pending) <= size:
            out = bytes(self.pending)
            del self.pending[:]
        else:
            out = bytes(self.pending[:size])
            del self.pending[:size]
        return out

    # A chunked body goes through two buffers, as in gunicorn: the decoder's
    # (rbuf, filled a piece at a time up to what was asked of it) and the
    # body's own (pending). Where each read stops decoding decides when a
    # malformed body raises, and which bytes were handed out before it did.

    cdef _decode(self, Py_ssize_t want):
        while len(self.rbuf) < want and self.cstate != CH_DONE:
            self._decode_step()

    cdef bytes _reader_read(self, Py_ssize_t size):
        cdef bytes out
        self._decode(size)
        out = bytes(self.rbuf[:size])
        del self.rbuf[:size]
        return out

    cdef bytes _chunked_read(self, Py_ssize_t size):
        cdef Py_ssize_t step
        if size < len(self.pending):
            return self._take(size)
        while size > len(self.pending):
            step = size - len(self.pending)
            if step < READ_STEP:
                step = READ_STEP
            if step > MAX_BODY_CHUNK:
                step = MAX_BODY_CHUNK
            data = self._reader_read(step)
            if not data:
                break
            self.pending += data
        return self._take(size)

    cdef bytes _chunked_readline(self, Py_ssize_t size):
        cdef Py_ssize_t idx
        cdef bytearray data = self.pending
        self.pending = bytearray()
        out = []
        while True:
            idx = data.find(b"\n", 0, size)
            if idx >= 0:
                idx += 1
            elif len(data) >= size:
                idx = size
            else:
                idx = 0
            if idx:
                out.append(bytes(data[:idx]))
                self.pending += data[idx:]
                break
            out.append(bytes(data))
            size -= len(data)
            data = bytearray(self._reader_read(size if size < READ_STEP else READ_STEP))
            if not data:
                break
        return b"".join(out)

    cdef bint _decode_step(self) except -1:
        cdef RequestParser parser = self.parser
        cdef const char *p
        cdef const char *hit
        cdef Py_ssize_t end, s, i, idx, semi, ze, n
        cdef unsigned long long size
        cdef unsigned char h
        if self.cstate == CH_SIZE:
            while True:
                p = PyBytes_AS_STRING(parser.buf)
                end = PyBytes_GET_SIZE(parser.buf)
                s = parser.pos
                idx = -1
                i = s
                while i < end:
                    hit = <const char *>memchr(p + i, c'\r', end - i)
                    if hit == NULL:
                        break
                    i = hit - p
                    if i + 1 < end and p[i + 1] == b'\n':
                        idx = i
                        break
                    i += 1
                if idx >= 0:
                    break
                if end - s > self.limit_size_line:
                    raise InvalidChunkSize(
                        b"line over %d bytes with no terminator" % self.limit_size_line)
                if not parser._fill(0):
                    raise NoMoreData()
            line = parser.buf[s:idx]
            parser.pos = idx + 2
            size_part, sep, ext = line.partition(b";")
            if sep:
                if b"\r" in ext:
                    raise InvalidChunkExtension("bare CR not allowed")
                size_part = size_part.rstrip(b" \t")
            if not size_part:
                raise InvalidChunkSize(size_part)
            for h in size_part:
                if HEXVAL[h] == 0xFF:
                    raise InvalidChunkSize(size_part)
            if sep and not CHUNK_EXT_RE.fullmatch(b";" + ext):
                raise InvalidChunkExtension("invalid chunk extension")
            size = 0
            for h in size_part:
                if size >> 60:
                    size = <unsigned long long>sys.maxsize
                    break
                size = (size << 4) | HEXVAL[h]
            if size > <unsigned long long>sys.maxsize:
                size = <unsigned long long>sys.maxsize
            if size == 0:
                self._read_trailers()
                self.cstate = CH_DONE
            else:
                self.chunk_left = <Py_ssize_t>size
                self.cstate = CH_DATA
            return True
        if self.cstate == CH_DATA:
            n = PyBytes_GET_SIZE(parser.buf) - parser.pos
            if n == 0:
                if not parser._fill(self.chunk_left):
                    raise NoMoreData()
                n = PyBytes_GET_SIZE(parser.buf) - parser.pos
            if n > self.chunk_left:
                n = self.chunk_left
            self.rbuf += parser.buf[parser.pos:parser.pos + n]
            parser.pos += n
            self.chunk_left -= n
            if self.chunk_left == 0:
                self.cstate = CH_DATA_END
            return True
        if self.cstate == CH_DATA_END:
            while PyBytes_GET_SIZE(parser.buf) - parser.pos < 2:
                if not parser._fill(0):
                    break
            term = parser.buf[parser.pos:parser.pos + 2]
            if term != b"\r\n":
                raise ChunkMissingTerminator(term)
            parser.pos += 2
            self.cstate = CH_SIZE
            return True
        return False

    cdef _read_trailers(self):
        cdef RequestParser parser = self.parser
        cdef const char *p
        cdef const char *hit
        cdef Py_ssize_t end, s, i, idx
        cdef Py_ssize_t searched = 0     # relative to the start of the trailers
        while True:
            p = PyBytes_AS_STRING(parser.buf)
            end = PyBytes_GET_SIZE(parser.buf)
            s = parser.pos
            if end - s >= 2 and p[s] == b'\r' and p[s + 1] == b'\n':
                parser.pos = s + 2
                return
            idx = -1
            i = s + searched
            while True:
                hit = <const char *>memchr(p + i, c'\r', end - i)
                if hit == NULL:
                    break
                i = hit - p
                if end - i < 4:
                    break
                if p[i + 1] == b'\n' and p[i + 2] == b'\r' and p[i + 3] == b'\n':
                    idx = i
                    break
                i += 1
            if idx >= 0:
                break
            if end - s > self.limit_trailers:
                raise LimitRequestHeaders("limit request trailer section size")
            i = s
            while True:
                hit = <const char *>memchr(p + i, c'\n', end - i)
                if hit == NULL:
                    break
                i = hit - p
                if i == s or p[i - 1] != b'\r':
                    raise InvalidHeader("bare LF as line terminator")
                i += 1
            # a terminator can only start in the last three bytes seen
            searched = end - s - 3 if end - s > 3 else 0
            if not parser._fill(0):
                raise ChunkMissingTerminator(b"")
        parser.pos = idx + 4
        # the body holds the request's trailer list, not the request: no
        # reference cycle, so a request is freed as soon as it is done with
        self.trailers.extend(parser._trailers(s, idx))

    # -- the file-like interface of gunicorn's Body ------------------------

    def read(self, size=None):
        cdef Py_ssize_t n = _getsize(size)
        if n == 0:
            return b""
        if self.kind == BODY_LENGTH:
            if n > self.remaining:
                n = self.remaining
            first = self._read(n)
            if len(first) == n or not first:
                return first
            chunks = [first]
            got = len(first)
            while got < n:
                data = self._read(n - got)
                if not data:
                    break
                chunks.append(data)
                got += len(data)
            return b"".join(chunks)
        return self._read(n)

    def readline(self, size=None):
        cdef Py_ssize_t n = _getsize(size)
        cdef RequestParser parser = self.parser
        cdef Py_ssize_t avail, lim, idx
        if n == 0:
            return b""
        if self.expect_continue:
            self._send_continue()
        if self.kind == BODY_LENGTH:
            chunks = []
            while n > 0 and self.remaining > 0:
                lim = n if n < self.remaining else self.remaining
                avail = PyBytes_GET_SIZE(parser.buf) - parser.pos
                if avail == 0:
                    try:
                        if not parser._fill(self.remaining):
                            break
                    except BaseException:
                        self.failed = True
                        raise
                    continue
                if avail > lim:
                    avail = lim
                idx = parser.buf.find(b"\n", parser.pos, parser.pos + avail)
                if idx >= 0:
                    chunks.append(self._read(idx + 1 - parser.pos))
                    break
                data = self._read(avail)
                chunks.append(data)
                n -= len(data)
            return b"".join(chunks)
        try:
            return self._chunked_readline(n)
        except BaseException:
            self.failed = True
            raise

    def readlines(self, size=None):
        data = self.read()
        out = []
        while data:
            pos = data.find(b"\n")
            if pos < 0:
                out.append(data)
                break
            out.append(data[:pos + 1])
            data = data[pos + 1:]
        return out


cdef Py_ssize_t _getsize(size) except? -1:
    if size is None:
        return sys.maxsize
    if not isinstance(size, int):
        raise TypeError("size must be an integral type")
    if size < 0 or size > sys.maxsize:
        return sys.maxsize
    return size


if tw_count_type(Request, LIVE_REQUEST) < 0 or tw_count_type(Body, LIVE_BODY) < 0:
    raise RuntimeError("cannot count Request and Body objects")
