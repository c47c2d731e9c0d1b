"""WSGI applications for the end-to-end tests, served by real gunicorn processes.

``app`` routes on the path: ``/_/<name>`` selects one of the small apps
below, and every other path is ``echo``, so a corpus request with any target
still gets an answer that shows what the server made of it. Each app is also
importable on its own (``apps:hello``, ``apps:echo``, ...).

Query parameters configure an app (``/_/sleep?s=1.5``); they are parsed by
hand from ``QUERY_STRING`` so the apps depend on nothing but the standard
library. No app writes anything outside the paths a test hands it.
"""
import hashlib
import json
import os
import tempfile
import time
from urllib.parse import parse_qs

# environ values of these types are echoed; anything else (wsgi.input, the
# socket, callables) is an object whose repr says nothing comparable.
_PLAIN = (str, int, float, bool, type(None))
# differs per connection, not per server behaviour
_NOT_ECHOED = {"REMOTE_PORT"}


def _query(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""),
                                          keep_blank_values=True).items()}


def _plain(value):
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, _PLAIN) for v in value)
    return False


def plain_environ(environ):
    """The environ keys with plain values, sorted, REMOTE_PORT left out."""
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in sorted(environ.items())
            if k not in _NOT_ECHOED and _plain(v)}


def _json_response(start_response, obj, status="200 OK", extra=()):
    data = json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))] + list(extra))
    return [data]


# -- the apps -----------------------------------------------------------------

def hello(environ, start_response):
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    """The plain environ and the whole body (latin-1 text) as sorted JSON."""
    body = environ["wsgi.input"].read()
    return _json_response(start_response, {"environ": plain_environ(environ),
                                           "body": body.decode("latin-1")})


def echo_noread(environ, start_response):
    """Like ``echo`` but never touches the body (for Expect: 100-continue)."""
    return _json_response(start_response, {"environ": plain_environ(environ)})


def echo_readline(environ, start_response):
    """The body as the list of what ``readline()`` returned, line by line."""
    inp = environ["wsgi.input"]
    size = int(_query(environ).get("size", "-1"))
    lines = []
    for _ in range(100000):
        line = inp.readline(size) if size >= 0 else inp.readline()
        if not line:
            break
        lines.append(line.decode("latin-1"))
    return _json_response(start_response, {"lines": lines})


def echo_iter(environ, start_response):
    """The body as the list of lines iteration over ``wsgi.input`` gave."""
    lines = [line.decode("latin-1") for line in environ["wsgi.input"]]
    return _json_response(start_response, {"lines": lines})


def echo_read_n(environ, start_response):
    """The body as the pieces of ``read(n)`` calls (``?n=``, default 7)."""
    inp = environ["wsgi.input"]
    n = int(_query(environ).get("n", "7"))
    pieces = []
    for _ in range(1000000):
        piece = inp.read(n)
        if not piece:
            break
        pieces.append(piece.decode("latin-1"))
    return _json_response(start_response, {"pieces": pieces})


def digest(environ, start_response):
    """Length and sha256 of the body, read in 64 KiB pieces (for large bodies)."""
    inp = environ["wsgi.input"]
    h = hashlib.sha256()
    total = 0
    while True:
        piece = inp.read(65536)
        if not piece:
            break
        total += len(piece)
        h.update(piece)
    return _json_response(start_response, {"length": total, "sha256": h.hexdigest()})


_responders = []


def responder(environ, start_response):
    """The id of what answers (the object ``start_response`` is bound to,
    else the callable itself) and of ``wsgi.early_hints``'s; the last few
    are kept alive, so an object made anew never has the id of one before."""
    owner = getattr(start_response, "__self__", start_response)
    hints = environ.get("wsgi.early_hints")
    hints_owner = getattr(hints, "__self__", hints)
    _responders.append((owner, hints_owner))
    del _responders[:-16]
    return _json_response(start_response, {"responder": id(owner), "hints": id(hints_owner)})


def worker_pid(environ, start_response):
    """Which worker answered: ``X-Worker-Pid`` header and the pid as the body."""
    body = str(os.getpid()).encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def stream(environ, start_response):
    """A generator without Content-Length: chunked for HTTP/1.1 (``?n=`` pieces)."""
    n = int(_query(environ).get("n", "5"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(n):
            yield ("piece %d\n" % i).encode("ascii")
        yield b""  # an empty piece must not end the chunked body early
        yield b"end\n"
    return gen()


def write_callable(environ, start_response):
    """The legacy ``write`` callable followed by an iterable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written first\n")
    write(b"")
    return [b"then returned\n"]


def status(environ, start_response):
    """``?code=204`` etc.; ``&body=1`` tries to send a body anyway."""
    q = _query(environ)
    code = q.get("code", "200")
    reasons = {"200": "OK", "204": "No Content", "304": "Not Modified",
               "404": "Not Found", "103": "Early Hints"}
    headers = [("Content-Type", "text/plain"), ("X-Status", code)]
    start_response("%s %s" % (code, reasons.get(code, "Whatever")), headers)
    if q.get("body"):
        return [b"this body must not be sent\n"]
    return []


_FILE_CACHE = {}


def file_content(size):
    """The bytes ``/_/file?size=N`` serves: deterministic, not all the same byte."""
    pattern = bytes(range(256)) * 16
    reps = size // len(pattern) + 1
    return (pattern * reps)[:size]


def file_app(environ, start_response):
    """``wsgi.file_wrapper`` over a temp file (unlinked at once: nothing is left behind).

    ``?size=`` bytes, ``&length=0`` omits Content-Length (framing by the server).
    """
    q = _query(environ)
    size = int(q.get("size", "100000"))
    fd, path = tempfile.mkstemp(prefix="turboworkers-test-file-")
    try:
        os.write(fd, file_content(size))
    finally:
        os.close(fd)
    f = open(path, "rb")
    os.unlink(path)
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("length", "1") != "0":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is None:
        return iter(lambda: f.read(8192), b"")
    return wrapper(f, 8192)


def big(environ, start_response):
    """A large list body (``?size=``, default 1 MiB) with Content-Length."""
    size = int(_query(environ).get("size", str(1 << 20)))
    body = file_content(size)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return [body[:size // 2], body[size // 2:]]


def raise_before(environ, start_response):
    raise RuntimeError("raised before start_response (expected by the test)")


def raise_after_start(environ, start_response):
    """start_response is called, but nothing was written: still a clean 500."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError("raised after start_response (expected by the test)")


def raise_mid_body(environ, start_response):
    """Headers and a first piece are out when the error comes: the response is cut."""
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"first piece\n"
        raise RuntimeError("raised in the middle of the body (expected by the test)")
    return gen()


_BAD_HEADERS = {
    "crlf": ("X-Bad", "value\r\nInjected: yes"),
    "lf": ("X-Bad", "value\nInjected: yes"),
    "cr": ("X-Bad", "value\rInjected: yes"),
    "name": ("X-Bad\r\nInjected", "yes"),
    "space": ("X Bad", "Injected"),
}


def bad_header(environ, start_response):
    """A header with CR/LF (``?kind=``): the server answers 500, never these bytes."""
    kind = _query(environ).get("kind", "crlf")
    start_response("200 OK", [("Content-Type", "text/plain"), _BAD_HEADERS[kind]])
    return [b"must not be sent\n"]


def sleep(environ, start_response):
    """Sleep ``?s=`` seconds, then answer. ``&marker=PATH`` is created on entry
    so a test knows the request is in flight without guessing a delay;
    ``&done=PATH`` once the sleep is over, before the answer."""
    q = _query(environ)
    marker = q.get("marker")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(q.get("s", "1")))
    if q.get("done"):
        with open(q["done"], "w") as f:
            f.write(str(os.getpid()))
    body = b"slept\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))),
                              ("X-Worker-Pid", str(os.getpid()))])
    return [body]


def multi_headers(environ, start_response):
    """Repeated response headers and a hop-by-hop one the server must drop."""
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                              ("X-Empty", ""), ("Content-Length", "3")])
    return [b"ok\n"]


def close_tracking(environ, start_response):
    """The body iterable's ``close()`` appends to ``?log=PATH``."""
    path = _query(environ).get("log")

    class Body:
        def __iter__(self):
            yield b"body\n"

        def close(self):
            if path:
                with open(path, "a") as f:
                    f.write("closed\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Body()


def _odd_cases():
    """Applications that bend or break PEP 3333, each answered by the server in its own way."""
    import io
    import sys

    def ok(start_response, headers, body):
        start_response("200 OK", headers)
        return body

    def start_twice(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"second\n"]

    def exc_info_before_send(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replaced by an error page (expected by the test)")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page\n"]

    def exc_info_after_send(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"already out\n")
        try:
            raise ValueError("too late for an error page (expected by the test)")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"never\n"]

    def generator_items(*items):
        def app_(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (item for item in items)
        return app_

    def file_wrapper(filelike, length=None, blksize=None):
        def app_(environ, start_response):
            f = filelike()
            headers = [("Content-Type", "application/octet-stream")]
            if length is not None:
                headers.append(("Content-Length", str(length)))
            start_response("200 OK", headers)
            wrapper = environ["wsgi.file_wrapper"]
            return wrapper(f, blksize) if blksize else wrapper(f)
        return app_

    def seeked_file():
        fd, path = tempfile.mkstemp(prefix="turboworkers-test-file-")
        os.write(fd, file_content(5000))
        os.close(fd)
        f = open(path, "rb")
        os.unlink(path)
        f.seek(1000)
        return f

    def early_hints(environ, start_response):
        hints = environ.get("wsgi.early_hints")
        if hints is not None:
            hints([("Link", "</style.css>; rel=preload; as=style")])
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    def status_obj(status):
        return lambda environ, start_response: ok(
            lambda st, h: start_response(status, h), [("Content-Type", "text/plain")], [b"x\n"])

    def headers(*pairs, body=(b"body\n",)):
        return lambda environ, start_response: ok(start_response, list(pairs), list(body))

    return {
        "str-body": headers(("Content-Type", "text/plain"), body=("text, not bytes",)),
        "str-body-second": generator_items(b"bytes first\n", "then text"),
        "none-item": generator_items(b"a", None),
        "empty-items": generator_items(b"", b"", b"x", b"", b"y"),
        "start-twice": start_twice,
        "exc-info-before-send": exc_info_before_send,
        "exc-info-after-send": exc_info_after_send,
        "no-start-response": lambda environ, start_response: [b"no headers\n"],
        "status-no-reason": status_obj("200"),
        "status-bad": status_obj("abc"),
        "status-bytes": status_obj(b"200 OK"),
        "status-999": status_obj("999 Custom"),
        "status-599-long-reason": status_obj("599 A Rather Long Reason Phrase With Spaces"),
        "status-latin1": status_obj("200 Caf\xe9"),
        "status-crlf": status_obj("200 OK\r\nInjected: yes"),
        "header-int-value": headers(("Content-Type", "text/plain"), ("X-Int", 5)),
        "header-bytes-name": headers(("Content-Type", "text/plain"), (b"X-Bytes", "v")),
        "header-latin1-value": headers(("Content-Type", "text/plain"), ("X-Latin", "caf\xe9")),
        "header-non-latin1-value": headers(("Content-Type", "text/plain"), ("X-Euro", "\u20ac")),
        "header-value-padded": headers(("Content-Type", "text/plain"), ("X-Pad", "  padded \t")),
        "header-value-tab-inside": headers(("Content-Type", "text/plain"), ("X-Tab", "a\tb")),
        "header-name-colon": headers(("Content-Type", "text/plain"), ("X-Colon:", "v")),
        "header-empty-name": headers(("Content-Type", "text/plain"), ("", "v")),
        "hop-by-hop": headers(("Content-Type", "text/plain"), ("Connection", "keep-alive"),
                              ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
                              ("Proxy-Authenticate", "x"), ("TE", "trailers"),
                              ("Trailer", "X-T"), ("Upgrade", "h2c")),
        "upgrade-websocket": headers(("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                     ("Content-Length", "5")),
        "content-length-short": headers(("Content-Length", "5"), body=(b"0123456789",)),
        "content-length-long": headers(("Content-Length", "20"), body=(b"0123456789",)),
        "content-length-padded": headers(("Content-Length", " 4 "), body=(b"abcd",)),
        "content-length-twice": headers(("Content-Length", "4"), ("Content-Length", "4"),
                                        body=(b"abcd",)),
        "content-length-bad": headers(("Content-Length", "four"), body=(b"abcd",)),
        "content-length-negative": headers(("Content-Length", "-1"), body=(b"abcd",)),
        "content-length-zero-with-body": headers(("Content-Length", "0"), body=(b"abcd",)),
        "content-length-pieces": headers(("Content-Length", "6"), body=(b"ab", b"", b"cd", b"ef")),
        "many-headers": headers(*[("X-H%03d" % i, "v" * (i % 7)) for i in range(150)]),
        "big-header": headers(("X-Big", "b" * 70000)),
        "no-headers": headers(),
        "lowercase-names": headers(("content-type", "text/plain"), ("x-lower", "1")),
        "tuple-body": headers(("Content-Type", "text/plain"), body=(b"a", b"b")),
        "bytearray-item": generator_items(b"a", bytearray(b"b")),
        "memoryview-item": generator_items(b"a", memoryview(b"b")),
        "file-bytesio": file_wrapper(lambda: io.BytesIO(b"from BytesIO\n" * 100)),
        "file-bytesio-length": file_wrapper(lambda: io.BytesIO(b"x" * 1000), length=1000),
        "file-length-short": file_wrapper(lambda: _tmp_file(5000), length=1234),
        "file-length-long": file_wrapper(lambda: _tmp_file(500), length=1234),
        "file-seeked": file_wrapper(seeked_file, length=4000),
        "file-seeked-no-length": file_wrapper(seeked_file),
        "file-small-blocks": file_wrapper(lambda: io.BytesIO(b"0123456789" * 10), blksize=7),
        "early-hints": early_hints,
    }


def _tmp_file(size):
    fd, path = tempfile.mkstemp(prefix="turboworkers-test-file-")
    os.write(fd, file_content(size))
    os.close(fd)
    f = open(path, "rb")
    os.unlink(path)
    return f


ODD = None


def odd(environ, start_response):
    """``/_/odd?case=NAME``: one of ``_odd_cases()`` (made on first use)."""
    global ODD
    if ODD is None:
        ODD = _odd_cases()
    return ODD[_query(environ).get("case", "")](environ, start_response)


def live_objects(environ, start_response):
    """Counters of the compiled parser and response writer in this worker
    process: {"pid": ..., "live": {class: {"made": n, "freed": m}}}, "live"
    being null in pure mode. Read while this request is in flight, so its own
    parser, Request, Body and Response are among the made and not freed.
    ``?gc=off`` turns the cyclic garbage collector of this process off, so
    that from then on only what reference counting frees counts as freed."""
    import gc
    from turboworkers import _ext
    if _query(environ).get("gc") == "off":
        gc.disable()
    counts = None
    if _ext.http_parser is not None:
        counts = dict(_ext.http_parser.live_objects())
        counts.update(_ext.response.live_objects())
    return _json_response(start_response, {"pid": os.getpid(), "live": counts})


def crash(environ, start_response):
    """The worker process dies in the middle of this request, before any byte
    of an answer: ``?how=segv`` (an invalid memory read) or ``?how=exit``
    (``os._exit(1)``). With ``?marker=PATH`` the pid is written there once
    the request is in flight; with ``?go=PATH`` the death waits (at most 30
    s, in steps that let other greenlets run) until that file exists."""
    import ctypes
    import resource
    q = _query(environ)
    marker = q.get("marker")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    go = q.get("go")
    if go:
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
    how = q.get("how", "segv")
    if how == "exit":
        os._exit(1)
    # no core file in the test's directory
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)
    raise AssertionError("reading address 0 did not crash")


ROUTES = {
    "odd": odd,
    "hello": hello,
    "echo": echo,
    "noread": echo_noread,
    "readline": echo_readline,
    "iter": echo_iter,
    "read_n": echo_read_n,
    "digest": digest,
    "pid": worker_pid,
    "responder": responder,
    "stream": stream,
    "write": write_callable,
    "status": status,
    "file": file_app,
    "big": big,
    "raise-before": raise_before,
    "raise-after-start": raise_after_start,
    "raise-mid-body": raise_mid_body,
    "bad-header": bad_header,
    "sleep": sleep,
    "multi-headers": multi_headers,
    "close": close_tracking,
    "live": live_objects,
    "crash": crash,
}


def app(environ, start_response):
    """``/_/<name>`` goes to ``ROUTES[name]``; everything else is ``echo``."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/_/"):
        target = ROUTES.get(path[3:])
        if target is not None:
            return target(environ, start_response)
    return echo(environ, start_response)
