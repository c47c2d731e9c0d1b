"""turboworkers._response against gunicorn's own Response, by difference.

Every case runs gunicorn 27's ``gunicorn.http.wsgi.Response`` and ours on the
same input and compares what reached the peer (with the Date value blanked),
the exception raised (class and args), the log warnings, and the attributes
the access log and post_request hooks read.  Two transports: a recording mock
(ours then takes its socket-like path, sendall only) and real sockets (a
socketpair or TCP loopback: ours takes the sendmsg/sendfile path).
"""
import contextlib
import email.utils
import errno
import io
import itertools
import logging
import os
import re
import socket
import tempfile
import threading

import pytest

from turboworkers import _ext

if _ext.MODE == "pure":
    pytest.skip("pure mode: the workers use gunicorn's own Response",
                allow_module_level=True)

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from gunicorn.http import wsgi as gwsgi  # noqa: E402

_response = _ext.response
Response = _response.Response


# ----------------------------------------------------------------- harness

class Req:
    """What gunicorn's Response reads from a request."""

    def __init__(self, version, method, close):
        self.version = version
        self.method = method
        self._close = close

    def should_close(self):
        return self._close


class Cfg:
    """What gunicorn's Response reads from the configuration."""

    def __init__(self, sendfile=True, is_ssl=False, protocol="http"):
        self.sendfile = sendfile
        self.is_ssl = is_ssl
        self.protocol = protocol


class MockSock:
    """A socket-like that records bytes: sendall and sendfile only."""

    def __init__(self):
        self.buf = bytearray()
        self.calls = 0

    def sendall(self, data, flags=0):
        self.calls += 1
        self.buf += bytes(data)

    def sendfile(self, file, offset=0, count=None):
        self.calls += 1
        data = os.pread(file.fileno(), count, offset)
        file.seek(offset + len(data))
        self.buf += data
        return len(data)


_DIRECT_CLASS = []


def direct_gevent_socket_class():
    """A gevent socket class registered with register_socket_class (as the
    gevent worker registers gevent's), counting the sendall calls made on
    it; the plain gevent class stays unregistered for the "gevent" kind."""
    if not _DIRECT_CLASS:
        gsocket = pytest.importorskip("gevent.socket")

        class Counting(gsocket.socket):
            sendalls = 0

            def sendall(self, data, flags=0):
                type(self).sendalls += 1
                return super().sendall(data, flags)

        _response.register_socket_class(Counting)
        _DIRECT_CLASS.append(Counting)

        class Inner(Counting):
            # registered as the gevent worker registers gevent's class: the
            # descriptor read from its inner socket; fileno() counted, to
            # show it is not called
            filenos = 0

            def fileno(self):
                type(self).filenos += 1
                return super().fileno()

        _response.register_socket_class(Inner, inner="_sock")
        _DIRECT_CLASS.append(Inner)
    return _DIRECT_CLASS[0]


def inner_gevent_socket_class():
    direct_gevent_socket_class()
    return _DIRECT_CLASS[1]


@contextlib.contextmanager
def real_socket(kind):
    """Yield (writer socket, bytearray that holds all the peer read once the
    block is left); a thread drains the peer so no write can block for good."""
    if kind in ("pair", "gevent", "gevent-direct", "gevent-inner"):
        w, r = socket.socketpair()
        if kind == "gevent":
            # a socket-like that is not a stdlib socket: ours must stay on
            # its sendall/sendfile
            gsocket = pytest.importorskip("gevent.socket")
            w = gsocket.socket(fileno=w.detach())
        elif kind == "gevent-direct":
            # a gevent socket of a class registered for direct writes
            w = direct_gevent_socket_class()(fileno=w.detach())
        elif kind == "gevent-inner":
            # the same, its descriptor read from its inner socket
            w = inner_gevent_socket_class()(fileno=w.detach())
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            r = socket.create_connection(lst.getsockname())
            w, _ = lst.accept()
        w.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = bytearray()

    def drain():
        while True:
            chunk = r.recv(262144)
            if not chunk:
                return
            out.extend(chunk)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        yield w, out
    finally:
        try:
            w.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        w.close()
        t.join(30)
        r.close()
        assert not t.is_alive()


@contextlib.contextmanager
def transport(kind):
    if kind == "mock":
        sock = MockSock()
        yield sock, sock.buf
    else:
        with real_socket(kind) as pair:
            yield pair


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelname, record.getMessage()))


def exc_key(exc):
    if exc is None:
        return None
    if isinstance(exc, OSError):
        return (type(exc), exc.errno)
    return (type(exc), exc.args)


def outcome_of(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # compared, never swallowed silently
        return ("exc",) + exc_key(exc)


DATE_RE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")


def blank_date(data):
    return DATE_RE.sub(b"\r\nDate: -\r\n", bytes(data))


class Case:
    def __init__(self, steps, version=(1, 1), method="GET", req_close=False,
                 force_close=False, sendfile=True, is_ssl=False, uwsgi=False):
        self.steps = steps
        self.version = version
        self.method = method
        self.req_close = req_close
        self.force_close = force_close
        self.sendfile = sendfile
        self.is_ssl = is_ssl
        self.uwsgi = uwsgi

    def __repr__(self):
        return "Case(%r)" % self.__dict__


# What a Response answered before reuse() makes it the next request's: the
# state each one leaves behind (a status, headers, a chunked body, bytes
# sent, a forced close, an upgrade, HTTP/1.0, HEAD) must all be gone.
PREVIOUS = {
    "chunked": Case([("hints", [("Link", "</a.css>; rel=preload")]),
                     ("start", "200 OK", [("X-Prev", "1")]), ("write", b"abc"),
                     ("write", b"de"), ("close",)]),
    "head-10-close": Case([("start", "304 Not Modified", [("Content-Length", "7")]),
                           ("list", [b"ignored"])],
                          version=(1, 0), method="HEAD", req_close=True, force_close=True),
    "upgrade": Case([("start", "101 Switching Protocols",
                      [("Upgrade", "websocket"), ("Connection", "Upgrade")]),
                     ("list", [b"x"])]),
}


def make(impl, sock, case, previous=None):
    if impl == "reused":
        # the connection's Response: made for another request, which it
        # answered, then reused for this one
        resp = Response(sock, previous.version, previous.method, previous.req_close,
                        cfg_sendfile=case.sendfile, is_ssl=case.is_ssl, uwsgi=case.uwsgi)
        hints = resp.send_early_hints
        if previous.force_close:
            resp.force_close()
        for s in previous.steps:
            step(impl, resp, hints, *s)
        resp.reuse(case.version, case.method, case.req_close)
        if case.force_close:
            resp.force_close()
        return resp, hints
    if impl == "gunicorn":
        req = Req(case.version, case.method, case.req_close)
        cfg = Cfg(case.sendfile, case.is_ssl, "uwsgi" if case.uwsgi else "http")
        resp = gwsgi.Response(req, sock, cfg)
        hints = gwsgi._make_early_hints_callback(req, sock, resp)
    else:
        resp = Response(sock, case.version, case.method, case.req_close,
                        cfg_sendfile=case.sendfile, is_ssl=case.is_ssl, uwsgi=case.uwsgi)
        hints = resp.send_early_hints
    if case.force_close:
        resp.force_close()
    return resp, hints


def step(impl, resp, hints, op, *args):
    if op == "start":
        return resp.start_response(*args)
    if op == "write":
        return resp.write(args[0])
    if op == "list":
        # what a worker does with a list/tuple body: gunicorn's way, or ours
        if impl == "gunicorn":
            for item in args[0]:
                resp.write(item)
            return resp.close()
        return resp.write_list(args[0])
    if op == "file":
        wrapper = args[0]()
        try:
            return resp.write_file(wrapper)
        finally:
            step.files.append(wrapper.filelike)
    if op == "close":
        return resp.close()
    if op == "send_headers":
        return resp.send_headers()
    if op == "hints":
        return hints(args[0])
    if op == "call":
        return args[0](resp)
    raise AssertionError(op)


step.files = []


def state(resp):
    st_ = {name: getattr(resp, name) for name in
           ("status", "headers", "chunked", "sent", "headers_sent",
            "response_length", "upgrade", "must_close")}
    st_["should_close"] = outcome_of(resp.should_close)
    st_["status_code"] = outcome_of(lambda: resp.status_code)
    return st_


def run(impl, case, kind, previous=None):
    skip = 0
    if previous is not None:
        # the bytes of the previous response, to be left out
        skip = len(run("ours", previous, kind)["bytes"])
    handler = Warnings()
    logger = logging.getLogger("gunicorn.http.wsgi")
    logger.addHandler(handler)
    exc = None
    step.files = []
    try:
        with transport(kind) as (sock, out):
            resp, hints = make(impl, sock, case, previous)
            handler.messages.clear()
            try:
                for s in case.steps:
                    step(impl, resp, hints, *s)
            except Exception as e:
                exc = e
            st_ = state(resp)
        positions = [outcome_of(lambda: os.lseek(f.fileno(), 0, os.SEEK_CUR))
                     for f in step.files]
        for f in step.files:
            f.close()
    finally:
        logger.removeHandler(handler)
    return {
        "bytes": blank_date(out)[skip:],
        "exc": exc_key(exc),
        "state": st_,
        "warnings": handler.messages,
        "file_positions": positions,
    }


def compare(case, kind="mock", previous=None):
    """gunicorn's Response and ours (made anew, or with ``previous`` the
    name of a PREVIOUS case, reused after answering it) answer the same."""
    theirs = run("gunicorn", case, kind)
    if previous is None:
        ours = run("ours", case, kind)
    else:
        ours = run("reused", case, kind, PREVIOUS[previous])
    for key in theirs:
        assert ours[key] == theirs[key], "%s differs for %r over %s (previous: %s)" % (
            key, case, kind, previous)
    return ours


def _crlf_nul_free(data):
    # nothing the app put in a header may inject a line (or a NUL)
    head = bytes(data).split(b"\r\n\r\n", 1)[0]
    assert b"\x00" not in head
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert b"\r" not in head.replace(b"\r\n", b"")


# ------------------------------------------------------------ the big table

STATUSES = ["200 OK", "204 No Content", "304 Not Modified",
            "101 Switching Protocols", "103 Early Hints", "404 Not Found",
            "500 Internal Server Error"]

HEADER_SETS = {
    "none": [],
    "ctype": [("Content-Type", "text/plain; charset=utf-8")],
    "cl5": [("Content-Type", "text/plain"), ("Content-Length", "5")],
    "cl3-short": [("Content-Length", " 3 ")],
    "cl0": [("content-length", "0")],
    "cl-long": [("Content-Length", "1000")],
    "hop": [("Connection", "close"), ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"), ("Server", "evil/1.0"),
            ("Date", "yesterday"), ("TE", "trailers"), ("Trailers", "X-T"),
            ("Proxy-Authenticate", "Basic"), ("Proxy-Authorization", "x"),
            ("X-Kept", "yes")],
    "websocket": [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")],
    "websocket-case": [("UPGRADE", " WebSocket "), ("connection", "\tuPgRaDe ")],
    "upgrade-other": [("Upgrade", "h2c"), ("Connection", "keep-alive, Upgrade")],
    "connection-ka": [("Connection", "keep-alive"), ("X-A", "")],
    "many": [("X-H%d" % i, "v" * i + "\x80\xff") for i in range(40)],
}

BODIES = {
    "nothing": [],
    "empty": [b""],
    "one": [b"hello"],
    "chunks": [b"ab", b"", b"cde", b"", b"f"],
    "big": [b"x" * 70000, b"", b"y" * 5],
}

CLOSES = [(False, False), (True, False), (False, True)]


def table_cases(status, method, version):
    for (hname, headers), (bname, body), (req_close, force), mode in itertools.product(
            HEADER_SETS.items(), BODIES.items(), CLOSES, ("write", "list")):
        if mode == "write":
            steps = [("start", status, list(headers))] + [("write", b) for b in body] + [("close",)]
        else:
            steps = [("start", status, list(headers)), ("list", list(body))]
        yield Case(steps, version=version, method=method, req_close=req_close,
                   force_close=force)


@pytest.mark.parametrize("version", [(1, 0), (1, 1)], ids=["1.0", "1.1"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("status", STATUSES)
def test_table_mock(status, method, version):
    for case in table_cases(status, method, version):
        compare(case, "mock")


@pytest.mark.parametrize("version", [(1, 0), (1, 1)], ids=["1.0", "1.1"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("status", ["200 OK", "204 No Content", "304 Not Modified",
                                    "101 Switching Protocols", "404 Not Found"])
def test_table_socketpair(status, method, version):
    for case in table_cases(status, method, version):
        if case.req_close and case.force_close:
            continue
        compare(case, "pair")


@pytest.mark.parametrize("version", [(1, 0), (1, 1)], ids=["1.0", "1.1"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("status", ["200 OK", "204 No Content", "101 Switching Protocols"])
@pytest.mark.parametrize("previous", sorted(PREVIOUS))
def test_table_reused(status, method, version, previous):
    """Response.reuse(): a Response that answered another request of the
    connection answers this one as a new one would."""
    for case in table_cases(status, method, version):
        compare(case, "mock", previous)
        if not (case.req_close and case.force_close):
            compare(case, "pair", previous)


def test_reuse_keeps_the_socket_and_options():
    sock = MockSock()
    resp = Response(sock, (1, 1), "GET", False, cfg_sendfile=False, uwsgi=True)
    resp.start_response("200 OK", [])
    resp.write_list([b"a"])
    headers = resp.headers
    resp.reuse((1, 0), "HEAD", True)
    assert resp.sock is sock
    assert resp.headers is headers      # emptied, not made anew
    assert (resp.request_version, resp.method, resp.status, resp.headers) == (
        (1, 0), "HEAD", None, [])
    assert not resp.headers_sent and resp.sent == 0
    resp.reuse((1, 1), "GET", False)
    resp.start_response("200 OK", [])
    resp.write(b"abc")
    # uwsgi: never chunked, whatever the request
    assert not resp.chunked


@pytest.mark.parametrize("kind", ["gevent", "gevent-direct", "gevent-inner"])
def test_table_gevent_socket(kind):
    for case in table_cases("200 OK", "GET", (1, 1)):
        compare(case, kind)


def test_inner_socket_descriptor():
    """A class registered with ``inner``: written through the inner
    socket's descriptor without a call of its own fileno(); once closed
    (gevent puts a stand-in whose fileno() is -1 in place of the inner
    socket), a write fails with EBADF, never reaching a descriptor number
    reused since."""
    cls = inner_gevent_socket_class()
    case = Case([("start", "200 OK", [("Content-Length", "5")]), ("list", [b"hello"])])
    before = cls.filenos
    assert run("ours", case, "gevent-inner") == run("gunicorn", case, "gevent")
    assert cls.filenos == before
    w, r = socket.socketpair()
    g = cls(fileno=w.detach())
    resp = Response(g, (1, 1), "GET", False)
    g.close()
    spare = socket.socket()     # likely takes the descriptor number just freed
    try:
        resp.start_response("200 OK", [("Content-Length", "5")])
        with pytest.raises(OSError) as info:
            resp.write_list([b"hello"])
        assert info.value.errno == errno.EBADF
    finally:
        spare.close()
        r.close()


def test_registered_socket_class_is_written_with_sendmsg_first():
    cls = direct_gevent_socket_class()
    small = Case([("start", "200 OK", [("Content-Length", "5")]), ("list", [b"hello"])])
    before = cls.sendalls
    ours = run("ours", small, "gevent-direct")
    assert ours == run("gunicorn", small, "gevent")
    assert cls.sendalls == before           # one sendmsg took it all
    # more than the socket buffer takes at once: the rest through its sendall
    big = bytes(range(256)) * 8192
    large = Case([("start", "200 OK", []), ("list", [big, b"tail"])])
    ours = run("ours", large, "gevent-direct")
    assert ours == run("gunicorn", large, "gevent")
    assert cls.sendalls > before


def test_uwsgi_is_never_chunked():
    for kind in ("mock", "pair"):
        for body in BODIES.values():
            out = compare(Case([("start", "200 OK", []), ("list", list(body))], uwsgi=True), kind)
            assert b"Transfer-Encoding" not in out["bytes"]
            compare(Case([("start", "200 OK", [])] + [("write", b) for b in body] + [("close",)],
                         uwsgi=True), kind)


@pytest.mark.parametrize("kind", ["mock", "pair", "tcp", "gevent", "gevent-direct"])
@pytest.mark.parametrize("headers", [[], [("Content-Length", "3000000")],
                                     [("Content-Length", "1234567")]])
def test_large_bodies(kind, headers):
    # more than any socket buffer: the plain path runs out of room mid-write
    # and must finish through sendall
    big = bytes(range(256)) * 8192          # 2 MiB
    for steps in ([("start", "200 OK", headers), ("write", big), ("write", big[:1000]),
                   ("write", big), ("close",)],
                  [("start", "200 OK", headers), ("list", [big, b"tail", big])],
                  [("start", "200 OK", headers), ("list", [b"a"] * 700 + [big])]):
        compare(Case(steps), kind)


def test_many_list_items():
    # more items than fit on the stack, more iovecs than one sendmsg takes
    items = [b"%d," % i for i in range(3000)] + [b""] * 50
    for kind in ("mock", "pair"):
        for headers in ([], [("Content-Length", "5000")]):
            compare(Case([("start", "200 OK", headers), ("list", items)]), kind)
            compare(Case([("start", "200 OK", headers), ("list", tuple(items))]), kind)


def test_list_of_other_sequences():
    # write_list with something that is neither list nor tuple still works
    for kind in ("mock", "pair"):
        ours = run("ours", Case([("start", "200 OK", []),
                                 ("call", lambda r: r.write_list(iter([b"a", b"bc"])))]), kind)
        theirs = run("gunicorn", Case([("start", "200 OK", []), ("list", [b"a", b"bc"])]), kind)
        assert ours == theirs


# ----------------------------------------------------------- the Date header

def test_date_value_is_formatdate():
    with contextlib.ExitStack() as stack:
        stack.callback(_response._set_time_source, None)
        for t in (0, 86399, 951782400, 1700000000.75, 4102444799, 253402300799):
            _response._set_time_source(lambda t=t: t)
            assert _response.http_date() == email.utils.formatdate(int(t), usegmt=True)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799))
def test_date_formatting_any_second(t):
    try:
        _response._set_time_source(lambda: t)
        assert _response.http_date() == email.utils.formatdate(t, usegmt=True)
    finally:
        _response._set_time_source(None)


def test_date_cache_rolls_over():
    now = [1700000000.1]
    try:
        _response._set_time_source(lambda: now[0])
        first = _response.http_date()
        now[0] = 1700000000.9
        assert _response.http_date() is first            # same second: not reformatted
        sock = MockSock()
        r = Response(sock, (1, 1), "GET", False)
        r.start_response("200 OK", [])
        r.close()
        assert b"\r\nDate: %s\r\n" % first.encode() in sock.buf
        now[0] = 1700000001.0
        second = _response.http_date()
        assert second != first
        assert second == email.utils.formatdate(1700000001, usegmt=True)
        sock = MockSock()
        r = Response(sock, (1, 1), "GET", False)
        r.start_response("200 OK", [])
        r.close()
        assert b"\r\nDate: %s\r\n" % second.encode() in sock.buf
    finally:
        _response._set_time_source(None)
    # back on the real clock
    assert abs(email.utils.parsedate_to_datetime(_response.http_date()).timestamp()
               - __import__("time").time()) < 5


# ------------------------------------------------- one write where possible

def test_headers_ride_with_the_first_write():
    sock = MockSock()
    r = Response(sock, (1, 1), "GET", False)
    r.start_response("200 OK", [("Content-Length", "5")])
    r.write(b"hello")
    assert sock.calls == 1
    assert bytes(sock.buf).endswith(b"\r\n\r\nhello")
    r.close()
    assert sock.calls == 1


def test_write_list_is_one_send():
    for headers in ([], [("Content-Length", "6")]):
        sock = MockSock()
        r = Response(sock, (1, 1), "GET", False)
        r.start_response("200 OK", headers)
        r.write_list([b"abc", b"", b"def"])
        assert sock.calls == 1


def test_chunked_close_carries_headers_and_last_chunk():
    sock = MockSock()
    r = Response(sock, (1, 1), "GET", False)
    r.start_response("200 OK", [])
    r.close()
    assert sock.calls == 1
    assert bytes(sock.buf).endswith(b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")


def test_api_surface():
    r = Response(MockSock(), (1, 1), "GET", False)
    assert r.status is None and r.headers == [] and r.sent == 0
    assert not r.headers_sent and not r.chunked and r.response_length is None
    assert r.version == gwsgi.SERVER
    assert r.start_response("200 OK", []) == r.write


# ------------------------------------------------------------- write_file

def _file(size, offset=0):
    fd, path = tempfile.mkstemp()
    os.write(fd, bytes((i * 7) & 0xFF for i in range(size)))
    os.close(fd)

    def factory():
        f = open(path, "rb")
        f.seek(offset)
        return gwsgi.FileWrapper(f)
    factory.path = path
    return factory


@pytest.fixture(scope="module")
def files():
    made = {(size, off): _file(size, off)
            for size in (0, 10, 300000) for off in (0, 7)}
    yield made
    for f in made.values():
        os.unlink(f.path)


FILE_HEADERS = {"none": [], "cl5": [("Content-Length", "5")],
                "cl-long": [("Content-Length", "400000")], "cl0": [("Content-Length", "0")]}


@pytest.mark.parametrize("kind", ["mock", "pair", "tcp", "gevent", "gevent-direct"])
@pytest.mark.parametrize("sendfile", [True, False])
@pytest.mark.parametrize("is_ssl", [False, True])
def test_write_file(files, kind, sendfile, is_ssl):
    for (key, factory), (hname, headers), version, method, status in itertools.product(
            files.items(), FILE_HEADERS.items(), [(1, 0), (1, 1)], ["GET", "HEAD"],
            ["200 OK", "204 No Content", "304 Not Modified"]):
        if key[0] == 300000 and (method == "HEAD" or status != "200 OK"):
            continue
        case = Case([("start", status, list(headers)), ("file", factory), ("close",)],
                    version=version, method=method, sendfile=sendfile, is_ssl=is_ssl)
        compare(case, kind)


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_write_file_without_fileno(kind):
    def bytesio():
        return gwsgi.FileWrapper(io.BytesIO(b"0123456789" * 1000), 777)

    def piped():
        rfd, wfd = os.pipe()
        os.write(wfd, b"through a pipe" * 10)
        os.close(wfd)
        return gwsgi.FileWrapper(os.fdopen(rfd, "rb"), 13)

    for factory in (bytesio, piped):
        for headers in ([], [("Content-Length", "100")]):
            compare(Case([("start", "200 OK", headers), ("file", factory), ("close",)]), kind)
            compare(Case([("start", "200 OK", headers), ("file", factory), ("close",)],
                         version=(1, 0)), kind)


def test_write_file_after_headers_sent(files):
    factory = files[(10, 0)]
    for kind in ("mock", "pair"):
        compare(Case([("start", "200 OK", []), ("write", b"pre"), ("file", factory),
                      ("close",)]), kind)
        compare(Case([("start", "200 OK", []), ("send_headers",), ("file", factory),
                      ("close",)]), kind)


# ------------------------------------------------------------- exc_info

def _exc_info(exc):
    try:
        raise exc
    except Exception as e:
        import sys
        return sys.exc_info()


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_exc_info(kind):
    err = _exc_info(RuntimeError("app failed"))
    cases = [
        # twice without exc_info
        [("start", "200 OK", [("X-A", "1")]), ("start", "500 Oops", [])],
        # replacement before anything was sent (gunicorn keeps the old headers)
        [("start", "200 OK", [("X-A", "1"), ("Content-Length", "2")]),
         ("start", "500 Internal Server Error", [("X-B", "2")], err), ("write", b"ohno"),
         ("close",)],
        [("start", "200 OK", [("Content-Length", "2")]),
         ("start", "204 No Content", [("X-B", "2")], err), ("close",)],
        # after the headers went out: the app's exception comes back
        [("start", "200 OK", []), ("write", b"x"), ("start", "500 Oops", [], err)],
        [("start", "200 OK", []), ("send_headers",), ("start", "500 Oops", [], err)],
        # a false exc_info is no exc_info
        [("start", "200 OK", []), ("start", "500 Oops", [], ())],
        [("start", "200 OK", []), ("write", b"x"), ("start", "500 Oops", [], None)],
        # a degenerate one
        [("start", "200 OK", []), ("write", b"x"), ("start", "500 Oops", [], (None, None, None))],
        [("start", "200 OK", []), ("write", b"x"),
         ("start", "500 Oops", [], (RuntimeError, None, None))],
        # exc_info on the first call
        [("start", "500 Oops", [("X-A", "1")], err), ("write", b"body"), ("close",)],
    ]
    for steps in cases:
        compare(Case(steps), kind)


def test_exc_info_reraises_the_same_exception():
    err = _exc_info(KeyError("k"))
    r = Response(MockSock(), (1, 1), "GET", False)
    r.start_response("200 OK", [])
    r.write(b"")
    with pytest.raises(KeyError) as got:
        r.start_response("500 Oops", [], err)
    assert got.value is err[1]


# ------------------------------------------------ validation of the head

BAD_NAMES = ["X\rY", "X\nY", "X\r\nInjected: 1", "X\x00", "", "X Y", "X:Y", "X\tY",
             "Caf\xe9", "X\u0100", "(x)", "x\x7f", "\u2028"]
BAD_VALUES = ["a\rb", "a\nb", "a\r\nSet-Cookie: evil=1", "a\x00b", "a\x7fb", "\x01",
              "\u0100", "a\u2028b", "\x0b", "\x1f", "\x85\r"]
GOOD_VALUES = ["", " ", "\t", " a b ", "\x80\xff", "a\tb", "~!@#$%^&*()", '"q"']
NON_STR = [b"X-A", 1, None, 1.5, ("a",), bytearray(b"x")]
BAD_ITEMS = [("X-A",), ("X-A", "1", "2"), "ab", "abc", 5, None, ["X-A", "1"], b"ab"]
STATUSES_BAD = ["", "20", "2000", "200OK", "200\tOK", "abc", " 200 OK", "200 OK\r\n",
                "200 O\x00K", "200 O\nK", "\uff12\uff10\uff10 OK", "200 \u0100",
                "200 \x7f", b"200 OK", 200, None, (200, "OK"), ["200 OK"]]
STATUSES_ODD_BUT_VALID = ["200", "200 ", "200  two spaces", "099 Low", "999 High",
                          "600 Custom", "200 \x80\xff\t~", "100 Continue", "199 x",
                          "205 Reset Content", "304"]


class HeaderGen:
    """Headers as an iterable that is neither list nor tuple."""

    def __iter__(self):
        yield ("X-I", "1")
        yield ["X-L", "2"]


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_header_validation(kind):
    steps_list = []
    for name in BAD_NAMES:
        steps_list.append([("start", "200 OK", [("X-Ok", "1"), (name, "v")]), ("close",)])
    for value in BAD_VALUES + GOOD_VALUES:
        steps_list.append([("start", "200 OK", [("X-Ok", "1"), ("X-V", value)]), ("close",)])
    for obj in NON_STR:
        steps_list.append([("start", "200 OK", [(obj, "v")]), ("close",)])
        steps_list.append([("start", "200 OK", [("X-A", obj)]), ("close",)])
    for item in BAD_ITEMS:
        steps_list.append([("start", "200 OK", [("X-Ok", "1"), item]), ("close",)])
    for headers in (None, 5, "ab", HeaderGen(), (("X-T", "1"),)):
        steps_list.append([("start", "200 OK", headers), ("close",)])
    for value in ("abc", "1_0", "-1", "+5", "  7", "", "0x10", "1e3",
                  "99999999999999999999999999", "\xb2"):
        steps_list.append([("start", "200 OK", [("Content-Length", value)]),
                           ("write", b"0123456789"), ("close",)])
    for steps in steps_list:
        out = compare(Case(steps), kind)
        _crlf_nul_free(out["bytes"])


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_status_validation(kind):
    for status in STATUSES_BAD + STATUSES_ODD_BUT_VALID:
        for method in ("GET", "HEAD"):
            out = compare(Case([("start", status, [("X-A", "b")]), ("write", b"body"),
                                ("close",)], method=method), kind)
            _crlf_nul_free(out["bytes"])


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_write_type_errors(kind):
    for bad in ("text", bytearray(b"x"), memoryview(b"x"), None, 5):
        compare(Case([("start", "200 OK", []), ("write", b"a"), ("write", bad)]), kind)
        compare(Case([("start", "200 OK", []), ("write", bad)]), kind)
        compare(Case([("start", "200 OK", []), ("list", [b"a", b"", bad, b"b"])]), kind)
        compare(Case([("start", "200 OK", [("Content-Length", "1")]),
                      ("list", [bad, b"b"])]), kind)
        compare(Case([("start", "204 No Content", []), ("list", [b"a", bad])]), kind)


class Str(str):
    def __str__(self):
        return "rewritten"


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_headers_changed_after_start_response(kind):
    # a hook or middleware may touch resp.headers / resp.status before the
    # head is rendered: rendered the way gunicorn renders them
    cases = [
        lambda r: r.headers.append(("X-Int", 5)),
        lambda r: r.headers.append(("X-Wide", "\u0100")),
        lambda r: r.headers.append(("X-Sub", Str("v"))),
        lambda r: r.headers.append(("X-Bad-Item",)),
        lambda r: setattr(r, "status", Str("201 Created")),
        lambda r: setattr(r, "status", "202 Accepted"),
        lambda r: r.headers.clear(),
        lambda r: setattr(r, "headers", None),
        lambda r: r.headers.extend([("X-%d" % i, "y" * 300) for i in range(40)]),
    ]
    for fn in cases:
        compare(Case([("start", "200 OK", [("X-A", "1")]), ("call", fn), ("write", b"x"),
                      ("close",)]), kind)
    compare(Case([("start", Str("200 OK"), [(Str("X-S"), Str(" v "))]), ("write", b"x"),
                  ("close",)]), kind)


@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_no_start_response(kind):
    for force in (False, True):
        for steps in ([("close",)], [("write", b"x")], [("send_headers",)],
                      [("list", [b"x"])]):
            compare(Case(steps, force_close=force), kind)


def test_big_head():
    # a head larger than the static buffer
    headers = [("X-Big-%d" % i, "v" * 1000) for i in range(20)]
    for kind in ("mock", "pair"):
        compare(Case([("start", "200 OK", headers), ("write", b"x"), ("close",)]), kind)
        compare(Case([("start", "200 OK", headers), ("list", [b"x", b"y"])]), kind)
        compare(Case([("start", "200 OK", headers), ("close",)]), kind)


def test_odd_versions():
    for version in ((0, 9), (1, 0), (1, 1), (2, 0), (1, 12)):
        for kind in ("mock", "pair"):
            compare(Case([("start", "200 OK", []), ("write", b"x"), ("close",)],
                         version=version), kind)
            compare(Case([("start", "200 OK", []), ("hints", [("Link", "</a>")])],
                         version=version), kind)


# ------------------------------------------------------------- early hints

@pytest.mark.parametrize("kind", ["mock", "pair"])
def test_early_hints(kind):
    link = [("Link", "</style.css>; rel=preload; as=style")]
    cases = [
        [("hints", link), ("hints", link + [("Link", " </a.js>; rel=preload ")]),
         ("start", "200 OK", []), ("write", b"x"), ("close",)],
        [("hints", [(b"Link", b"</b>")]), ("start", "200 OK", []), ("close",)],
        [("hints", [])],
        [("start", "200 OK", []), ("hints", link), ("close",)],
        [("start", "200 OK", []), ("send_headers",), ("hints", link), ("close",)],
        [("hints", [("Li\r\nnk", "x")])],
        [("hints", [("Link", "x\r\nEvil: 1")])],
        [("hints", [("Link", "x"), ("Bad Name", "y")])],
        [("hints", [("Link", "\u0100")])],
        [("hints", [(b"Li\nk", b"x")])],
        [("hints", [(1, "x")])],
        [("hints", [("Link", 2)])],
        [("hints", [(bytearray(b"Link"), "x")])],
        [("hints", [("Link",)])],
        [("hints", None)],
    ]
    for steps in cases:
        for version in ((1, 0), (1, 1)):
            out = compare(Case(steps, version=version), kind)
            _crlf_nul_free(out["bytes"].split(b"\r\n\r\n")[0])


# ------------------------------------------------------- broken connections

def test_write_after_peer_closed():
    results = []
    for impl in ("gunicorn", "ours"):
        w, r = socket.socketpair()
        r.close()
        resp, _ = make(impl, w, Case([]))
        resp.start_response("200 OK", [])
        with pytest.raises(OSError) as got:
            resp.write(b"x" * 10)
        results.append((type(got.value), got.value.errno, resp.headers_sent))
        w.close()
    assert results[0] == results[1]


def test_write_on_closed_socket():
    results = []
    for impl in ("gunicorn", "ours"):
        w, r = socket.socketpair()
        resp, _ = make(impl, w, Case([]))
        resp.start_response("200 OK", [])
        w.close()
        with pytest.raises(OSError) as got:
            resp.write(b"x")
        results.append((type(got.value), got.value.errno, resp.headers_sent, resp.sent))
        r.close()
    assert results[0] == results[1]


# --------------------------------------------------------- generated cases

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
KNOWN_NAMES = ["Content-Length", "content-length", "Connection", "Upgrade", "Server",
               "Date", "Keep-Alive", "TE", "Trailers", "Transfer-Encoding",
               "Proxy-Authenticate", "Proxy-Authorization", "Content-Type", "X-A"]

names = st.one_of(
    st.sampled_from(KNOWN_NAMES),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=8),
    st.text(alphabet=TOKEN_CHARS + " :\r\n\x00\t\x7f\xe9\u0100", min_size=0, max_size=6),
)
values = st.one_of(
    st.sampled_from(["close", "keep-alive", "Upgrade", "websocket", "0", "3", "10",
                     " 4 ", "chunked", "x"]),
    st.integers(min_value=-2, max_value=40).map(str),
    st.text(alphabet=st.characters(max_codepoint=0x10f), max_size=10),
)
header_items = st.one_of(
    st.tuples(names, values),
    st.tuples(names, values),
    st.tuples(names, values),
    st.just(("X-Only",)),
    st.tuples(st.sampled_from([b"X-B", 3]), values),
    st.tuples(names, st.sampled_from([b"v", 4])),
)
statuses = st.one_of(
    st.sampled_from(STATUSES + STATUSES_ODD_BUT_VALID),
    st.from_regex(r"[0-9]{3}( [ \t!-~\x80-\xff]{0,6})?", fullmatch=True),
    st.text(alphabet="0123456789 \t\r\nOK\x00\xe9", max_size=7),
)
bodies = st.lists(st.one_of(st.binary(max_size=20), st.just(b""), st.just("str")), max_size=5)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, headers=st.lists(header_items, max_size=6), body=bodies,
       method=st.sampled_from(["GET", "HEAD", "POST"]),
       version=st.sampled_from([(1, 0), (1, 1)]), req_close=st.booleans(),
       force_close=st.booleans(), mode=st.sampled_from(["write", "list"]),
       uwsgi=st.booleans(), kind=st.sampled_from(["mock", "pair"]),
       hints=st.one_of(st.none(), st.lists(header_items, max_size=2)))
def test_generated(status, headers, body, method, version, req_close, force_close,
                   mode, uwsgi, kind, hints):
    steps = []
    if hints is not None:
        steps.append(("hints", hints))
    steps.append(("start", status, headers))
    if mode == "write":
        steps += [("write", b) for b in body] + [("close",)]
    else:
        steps.append(("list", body))
    case = Case(steps, version=version, method=method, req_close=req_close,
                force_close=force_close, uwsgi=uwsgi)
    out = compare(case, kind)
    _crlf_nul_free(out["bytes"].split(b"HTTP/1.1 103 Early Hints\r\n")[-1])
