"""Hostile requests over real sockets: request smuggling and malformed framing.

Each case is one hostile request with a harmless request pipelined right
behind it in the same send. It goes, on a new connection, to each turbo
worker class and to stock ``-k sync --http-parser python`` (the oracle), all
started once per module with the same limits. For every case and every
worker class:

* the status line of the first response equals stock gunicorn's (the case
  list itself is checked too: stock must refuse each case with a 4xx/5xx);
* the server closes the connection, and the pipelined request is never
  answered: the client reads until EOF (bounded) and finds exactly one
  response;
* a normal request on a new connection then succeeds: the worker lives on.

A few hostile requests stock gunicorn does not refuse (``ACCEPTED``: a
Content-Length or chunk size beyond 64 bits, ``gzip, chunked``,
``Transfer_Encoding``) are checked for the same first answer as stock: same
status and the same body handed to the application, so bytes meant to be
smuggled land where stock puts them.

In pure mode (``TURBOWORKERS_NO_EXTENSIONS=1``) the turbo workers parse with
gunicorn's own code (``--http-parser python``, as the oracle), so the statuses
agree by construction and what is checked is our connection handling: the
close, nothing served after the error, the worker alive.
"""
import json
import re

import pytest

import servers
from turboworkers import _ext

#: the limits every server of this module runs with (smaller than the
#: defaults, so oversized cases stay small on the wire)
LIMIT_LINE = 512
LIMIT_FIELDS = 10
LIMIT_FIELD_SIZE = 256
LIMIT_ARGS = ["--limit-request-line", str(LIMIT_LINE),
              "--limit-request-fields", str(LIMIT_FIELDS),
              "--limit-request-field_size", str(LIMIT_FIELD_SIZE)]

WORKERS = {
    "sync-mutex": ("turboworkers.SyncMutexWorker", []),
    "epoll-thread": ("turboworkers.EpollThreadWorker", ["--threads", "2"]),
    "gevent-mutex": ("turboworkers.GeventMutexWorker", ["--worker-connections", "50"]),
}
STOCK = ("sync", ["--http-parser", "python"])
#: In pure mode the turbo workers parse with gunicorn's own code, chosen by
#: ``http_parser``; they get the oracle's ``python`` so the settings are the
#: same. (With the default ``auto`` and gunicorn_h1c 0.6.9 installed they, and
#: stock -k sync, parse with h1c, which answers 200 to bare-lf-head,
#: double-space-request-line, obs-fold, obs-fold-tab, te-leading-space-line,
#: 400 instead of 501 to te-chunkedx, te-xchunked, te-quoted, and 501 instead of
#: 400 to te-folded-value.) In accelerated mode they run with the default ``auto``:
#: any other value turns our parser off.
PURE_ARGS = ["--http-parser", "python"] if _ext.MODE == "pure" else []

#: seconds a case may take to be answered and closed
READ_TIMEOUT = 5.0

PIPELINED = b"GET /second-request HTTP/1.1\r\nHost: h\r\n\r\n"


# -- the cases -------------------------------------------------------------------

def req(*headers, body=b"", method=b"POST", target=b"/", version=b"HTTP/1.1", host=True):
    """A request: request line, ``Host: h`` (unless ``host`` is false), ``headers``, the body."""
    lines = [method + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: h")
    lines.extend(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked"
GOOD_CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"


def chunked(body):
    return req(CHUNKED, body=body)


CASES = {
    # Content-Length together with Transfer-Encoding, both orders
    "cl-and-te": req(b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n"),
    "te-and-cl": req(CHUNKED, b"Content-Length: 5", body=b"0\r\n\r\n"),
    "cl-0-and-te": req(b"Content-Length: 0", CHUNKED, body=GOOD_CHUNKS),
    # Content-Length: duplicates, lists, signs, overflow, odd digits
    "cl-dup-conflict": req(b"Content-Length: 3", b"Content-Length: 4", body=b"abcd"),
    "cl-dup-same": req(b"Content-Length: 3", b"Content-Length: 3", body=b"abc"),
    "cl-list": req(b"Content-Length: 3, 3", body=b"abc"),
    "cl-list-conflict": req(b"Content-Length: 3,4", body=b"abcd"),
    "cl-plus": req(b"Content-Length: +3", body=b"abc"),
    "cl-minus": req(b"Content-Length: -1", body=b""),
    "cl-hex": req(b"Content-Length: 0x3", body=b"abc"),
    "cl-underscore": req(b"Content-Length: 1_0", body=b"0123456789"),
    "cl-inner-space": req(b"Content-Length: 1 0", body=b"0123456789"),
    "cl-empty": req(b"Content-Length: ", body=b""),
    "cl-float": req(b"Content-Length: 3.0", body=b"abc"),
    "cl-vtab": req(b"Content-Length: 3\x0b", body=b"abc"),
    "cl-nul": req(b"Content-Length: 3\x00", body=b"abc"),
    "cl-superscript": req(b"Content-Length: \xb3", body=b"abc"),
    # chunked where it has no meaning, and stacked or obfuscated codings
    "te-chunked-http10": req(CHUNKED, body=GOOD_CHUNKS, version=b"HTTP/1.0"),
    "te-chunked-chunked": req(b"Transfer-Encoding: chunked, chunked", body=GOOD_CHUNKS),
    "te-two-headers": req(CHUNKED, CHUNKED, body=GOOD_CHUNKS),
    "te-xchunked": req(b"Transfer-Encoding: xchunked", body=GOOD_CHUNKS),
    "te-chunkedx": req(b"Transfer-Encoding: chunkedx", body=GOOD_CHUNKS),
    "te-vtab": req(b"Transfer-Encoding: chunked\x0b", body=GOOD_CHUNKS),
    "te-formfeed": req(b"Transfer-Encoding: \x0cchunked", body=GOOD_CHUNKS),
    "te-nul": req(b"Transfer-Encoding: chunked\x00", body=GOOD_CHUNKS),
    "te-quoted": req(b'Transfer-Encoding: "chunked"', body=GOOD_CHUNKS),
    "te-tab-before-colon": req(b"Transfer-Encoding\t: chunked", body=GOOD_CHUNKS),
    "te-space-before-colon": req(b"Transfer-Encoding : chunked", body=GOOD_CHUNKS),
    "te-folded-value": req(b"Transfer-Encoding:\r\n chunked", body=GOOD_CHUNKS),
    "te-leading-space-line": req(b"X-A: b", b" Transfer-Encoding: chunked", body=GOOD_CHUNKS),
    "te-chunked-gzip": req(b"Transfer-Encoding: chunked, gzip", body=GOOD_CHUNKS),
    "te-chunked-identity": req(b"Transfer-Encoding: chunked, identity", body=GOOD_CHUNKS),
    "te-identity": req(b"Transfer-Encoding: identity", body=b""),
    "te-empty-list-item": req(b"Transfer-Encoding: chunked,", body=GOOD_CHUNKS),
    # bad chunk sizes, extensions and terminators
    "chunk-size-not-hex": chunked(b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-negative": chunked(b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-plus": chunked(b"+5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-0x": chunked(b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-empty": chunked(b"\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-underscore": chunked(b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
    "chunk-size-inner-space": chunked(b"5 5\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext-nul": chunked(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext-bare-cr": chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
    "chunk-ext-bare-lf": chunked(b"5;a\nhello\r\n0\r\n\r\n"),
    "chunk-data-too-long": chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"),
    "chunk-lf-only": chunked(b"5\nhello\n0\n\n"),
    "chunk-missing-crlf-after-data": chunked(b"5\r\nhello0\r\n\r\n"),
    "chunk-trailer-nul": chunked(b"0\r\nX-T\x00: a\r\n\r\n"),
    "chunk-trailer-fold": chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"),
    "chunk-trailer-space-colon": chunked(b"0\r\nX-T : a\r\n\r\n"),
    # bare CR, NUL and control bytes in every part of the head
    "bare-cr-method": b"GE\rT / HTTP/1.1\r\nHost: h\r\n\r\n",
    "bare-cr-target": req(method=b"GET", target=b"/a\rb"),
    "bare-cr-version": req(method=b"GET", version=b"HTTP/1.1\r"),
    "bare-cr-name": req(b"X-\rA: b", method=b"GET"),
    "bare-cr-value": req(b"X-A: b\rc", method=b"GET"),
    "bare-cr-line-end": req(b"X-A: b\r\rX-B: c", method=b"GET"),
    "nul-method": req(method=b"GE\x00T"),
    "nul-target": req(method=b"GET", target=b"/a\x00b"),
    "nul-version": req(method=b"GET", version=b"HTTP/1.1\x00"),
    "nul-name": req(b"X-\x00A: b", method=b"GET"),
    "nul-value": req(b"X-A: b\x00c", method=b"GET"),
    "ctl-target": req(method=b"GET", target=b"/a\x01b"),
    "del-target": req(method=b"GET", target=b"/a\x7fb"),
    "esc-value": req(b"X-A: b\x1bc", method=b"GET"),
    "del-name": req(b"X-\x7fA: b", method=b"GET"),
    "tab-name": req(b"X\tA: b", method=b"GET"),
    "high-byte-name": req(b"X-\xffA: b", method=b"GET"),
    "ctl-method": req(method=b"G\x01T"),
    "ctl-version": req(method=b"GET", version=b"HTTP/1.1\x01"),
    "ctl-name": req(b"X-\x01A: b", method=b"GET"),
    "nul-before-request-line": b"\x00GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "bare-cr-chunk-size": chunked(b"5\rhello\r\n0\r\n\r\n"),
    "nul-chunk-size": chunked(b"5\x00\r\nhello\r\n0\r\n\r\n"),
    "te-comma-first": req(b"Transfer-Encoding: , chunked", body=GOOD_CHUNKS),
    "bare-lf-head": b"GET / HTTP/1.1\nHost: h\n\n",
    "tab-in-request-line": b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "double-space-request-line": b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    "lowercase-method": req(method=b"get"),
    "bad-version": req(method=b"GET", version=b"HTTP/2.0"),
    "bad-version-digits": req(method=b"GET", version=b"HTTP/1.10"),
    # obs-fold and whitespace around the colon
    "obs-fold": req(b"X-A: b", b" c", method=b"GET"),
    "obs-fold-tab": req(b"X-A: b", b"\tc", method=b"GET"),
    "space-before-colon": req(b"Host : h", method=b"GET", host=False),
    "empty-name": req(b": v", method=b"GET"),
    "no-colon": req(b"X-A", method=b"GET"),
    "expect-unknown": req(b"Expect: 100-foo", b"Content-Length: 3", body=b"abc"),
    # against the configured limits
    "line-too-long": req(method=b"GET", target=b"/" + b"a" * (LIMIT_LINE + 10)),
    "too-many-fields": req(*[b"X-%d: v" % i for i in range(LIMIT_FIELDS + 2)], method=b"GET"),
    "field-too-large": req(b"X-A: " + b"v" * (LIMIT_FIELD_SIZE + 10), method=b"GET"),
    "field-name-too-large": req(b"X-" + b"n" * (LIMIT_FIELD_SIZE + 10) + b": v", method=b"GET"),
}

#: hostile requests stock gunicorn does not refuse: the first answer (status
#: and, for the echo app, the body it read) must be the same as stock's, so
#: the bytes meant to be smuggled end up where stock puts them. Those marked
#: "shut" are followed by a half-close: the server waits for more otherwise.
ACCEPTED = {
    # gunicorn passes a coding before the final chunked through to the app
    "te-gzip-chunked": (req(b"Transfer-Encoding: gzip, chunked", body=GOOD_CHUNKS), False),
    # "_" is no "-": the header is dropped (header_map=drop), so no body
    "te-underscore-name": (req(b"Transfer_Encoding: chunked", body=GOOD_CHUNKS), False),
    # a length beyond any integer type: the body is whatever comes until EOF
    "cl-overflow": (req(b"Content-Length: 99999999999999999999999999999", body=b"abc"), True),
    "cl-2-pow-64-plus-3": (req(b"Content-Length: 18446744073709551619", body=b"abc"), True),
    # a chunk size beyond 64 bits: the chunk never ends
    "chunk-size-overflow": (chunked(b"ffffffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), True),
    "chunk-size-2-pow-64-plus-5": (chunked(b"10000000000000005\r\nhello\r\n0\r\n\r\n"), True),
}


# -- the servers ------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet(module_gunicorn_server):
    """{name: server} for the three turbo workers and stock sync, booted side by side."""
    started = {}
    for name, (worker_class, extra) in list(WORKERS.items()) + [("stock-sync", STOCK)]:
        started[name] = module_gunicorn_server(
            app="apps:app", worker_class=worker_class,
            args=LIMIT_ARGS + extra + ([] if worker_class == "sync" else PURE_ARGS),
            name=name, wait=False)
    for srv in started.values():
        srv.wait_ready()
        srv.booted_pids = srv.worker_pids()
    return started


# -- talking to them -----------------------------------------------------------------

_STATUS = re.compile(rb"HTTP/1\.[01] \d{3}[^\r\n]*")


def responses(data):
    """Status lines of the responses in ``data``, read one after the other by their framing."""
    found = []
    pos = 0
    while pos < len(data):
        m = _STATUS.match(data, pos)
        if m is None:
            # bytes that are no response head: count any status line still inside
            found.extend(x.decode("latin-1") for x in re.findall(rb"(?:^|\r\n)(HTTP/1\.[01] \d{3}[^\r\n]*)",
                                                                 data[pos:]))
            break
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            found.append(m.group(0).decode("latin-1") + " <incomplete head>")
            break
        head = data[pos:end]
        found.append(m.group(0).decode("latin-1"))
        pos = end + 4
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        if length:
            pos += int(length.group(1))
        elif re.search(rb"\r\ntransfer-encoding:\s*chunked", head, re.I):
            try:
                payload_end = _chunked_end(data, pos)
            except ValueError:
                break
            pos = payload_end
        else:
            break  # read until close: the rest is the body
    return found


def _chunked_end(data, pos):
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return data.index(b"\r\n\r\n", pos - 2) + 4
        pos += size + 2


def exchange(srv, data, shut=False):
    """Send ``data`` in one write (then half-close with ``shut``), read until the server
    closes or READ_TIMEOUT passes: (bytes, closed, error)."""
    steps = [("send", data)] + ([("shut",)] if shut else [])
    return servers.raw_exchange(lambda: srv.connect(timeout=READ_TIMEOUT), steps, timeout=READ_TIMEOUT)


def status_of(srv, data, shut=False):
    got = exchange(srv, data, shut)
    return responses(got.data), got


def first_answer(got):
    """(status line, the body the echo app read) of the first response, or None."""
    if not got.data:
        return None
    _interim, status, headers, rest = servers.split_response(got.data)
    length = [int(v) for k, v in headers if k.lower() == "content-length"]
    body = rest[:length[0]] if length else rest
    try:
        echoed = json.loads(body)["body"]
    except (ValueError, KeyError, TypeError):
        echoed = "<not the echo app: %r>" % body[:100]
    return status, echoed


_ORACLE = {}


def oracle(fleet, name):
    """Status lines stock gunicorn answers case ``name`` with (asked once per case)."""
    if name not in _ORACLE:
        statuses, got = status_of(fleet["stock-sync"], CASES[name] + PIPELINED)
        _ORACLE[name] = (statuses, got)
    return _ORACLE[name]


def check_alive(srv):
    resp = srv.get("/_/hello", timeout=READ_TIMEOUT)
    assert resp.status == 200 and resp.body == b"Hello, world!\n", resp


# -- the tests ----------------------------------------------------------------------

def test_case_count():
    assert len(CASES) >= 60, len(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_stock_refuses(fleet, name):
    """The oracle itself: stock gunicorn refuses each case and closes after one response."""
    statuses, got = oracle(fleet, name)
    assert statuses, "stock gunicorn sent no response to %r: %r" % (CASES[name], got)
    assert int(statuses[0].split()[1]) >= 400, \
        "stock gunicorn accepted the hostile request %r: %r" % (CASES[name], got.data[:300])
    assert len(statuses) == 1, statuses
    assert got.closed, "stock gunicorn did not close within %.0f s" % READ_TIMEOUT


@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile(fleet, worker, name):
    srv = fleet[worker]
    expected, _stock = oracle(fleet, name)
    data = CASES[name] + PIPELINED
    statuses, got = status_of(srv, data)
    assert statuses, "no response at all to %r (%r)" % (data, got)
    assert statuses[0] == expected[0], \
        "%s answered %r, stock gunicorn %r, to %r" % (worker, statuses[0], expected[0], data)
    assert got.closed, "%s kept the connection open after %r (%.0f s)" % (worker, statuses[0], READ_TIMEOUT)
    assert len(statuses) == 1, \
        "%s answered after the error (the pipelined request was served): %r\n%r" % (worker, statuses, got.data)
    check_alive(srv)


@pytest.mark.parametrize("worker", sorted(WORKERS) + ["stock-sync"])
def test_workers_survived(fleet, worker):
    """After every case, the worker process that booted is still the one serving."""
    srv = fleet[worker]
    check_alive(srv)
    assert srv.worker_pids() == srv.booted_pids, "the worker was replaced: %s" % srv.log_tail(80)
    log = srv.log_text()
    if worker != "stock-sync" and _ext.MODE == "accelerated":
        assert "turboworkers: Cython HTTP parser" in log, "our parser was not used: %s" % srv.log_tail(80)
    assert "Traceback" not in log or worker == "stock-sync", srv.log_tail(80)


_ACCEPTED_ORACLE = {}


@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_like_stock(fleet, worker, name):
    """What stock lets through, ours lets through the same way: same status, same body read."""
    data, shut = ACCEPTED[name]
    data += PIPELINED
    if name not in _ACCEPTED_ORACLE:
        _ACCEPTED_ORACLE[name] = first_answer(exchange(fleet["stock-sync"], data, shut))
    expected = _ACCEPTED_ORACLE[name]
    got = exchange(fleet[worker], data, shut)
    assert first_answer(got) == expected, "%s: %r\nstock: %r" % (worker, got, expected)
    if shut:
        assert got.closed, "%s did not close after the client's EOF" % worker
    check_alive(fleet[worker])
