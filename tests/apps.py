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
    so a test knows the request is in flight without guessing a delay."""
    q = _query(environ)
    marker = q.get("marker")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(q.get("s", "1")))
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


ROUTES = {
    "hello": hello,
    "echo": echo,
    "noread": echo_noread,
    "readline": echo_readline,
    "iter": echo_iter,
    "read_n": echo_read_n,
    "digest": digest,
    "pid": worker_pid,
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
}


def app(environ, start_response):
    """``/_/<name>`` goes to ``ROUTES[name]``; everything else is ``echo``."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/_/"):
        target = ROUTES.get(path[3:])
        if target is not None:
            return target(environ, start_response)
    return echo(environ, start_response)
