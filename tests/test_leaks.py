"""Leak counters: every parser, request, body and response a worker makes is
freed once its connection is gone.

The compiled parser and writer count the objects they make and free
(``_http_parser.live_objects()``, ``_response.live_objects()``). Each worker
class serves a mix of traffic (keep-alive, pipelining, chunked and unread
bodies, malformed requests, application errors, clients that vanish mid-head,
mid-body or with a reset, keep-alive connections left to expire); then, with
every client connection closed, the counters read by one more request
(``/_/live``) must show exactly that request's own objects alive: one
RequestParser, one Request, one Body, one Response. The worker's cyclic
garbage collector is switched off first, so an object kept alive by a
reference cycle counts as leaked too: everything must be freed by reference
counting, at the moment its connection ends.

Pure mode has no such counters (gunicorn's own classes serve the requests).
"""
import gc
import json
import socket
import struct
import time

import pytest

import servers
from turboworkers import _ext

ACCELERATED = _ext.MODE == "accelerated"
pytestmark = pytest.mark.skipif(
    not ACCELERATED, reason="pure mode: gunicorn's own parser and response serve the "
                            "requests, and they carry no leak counters")

ROUNDS = 8
# the objects of the one request that reads the counters
IN_FLIGHT = {"RequestParser": 1, "Request": 1, "Body": 1, "Response": 1}

WORKERS = {
    "sync": dict(worker_class="turboworkers.SyncMutexWorker", args=[]),
    "thread": dict(worker_class="turboworkers.EpollThreadWorker",
                   args=["--threads", "4", "--keep-alive", "1"]),
    "gevent": dict(worker_class="turboworkers.GeventMutexWorker", args=["--keep-alive", "1"]),
}


# -- the traffic ----------------------------------------------------------------

def _head(path, method="GET", extra=""):
    return ("%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (method, path, extra)).encode("ascii")


def _talk(srv, data, shut=True):
    """Send ``data``, read until the server closes (bounded): what came back."""
    return servers.raw_exchange(lambda: srv.connect(timeout=10), [("send", data)]
                                + ([("shut",)] if shut else []), timeout=10).data


def _vanish(srv, data, reset=False):
    """Send ``data`` and go away without reading (with ``reset``: an RST)."""
    s = srv.connect(timeout=10)
    try:
        s.sendall(data)
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()


def _left_idle(srv):
    """One answered request on a keep-alive connection, then silence: the
    server's keep-alive bound ends it (sync: closes after the answer)."""
    s = srv.connect(timeout=10)
    s.sendall(_head("/_/hello"))
    got = b""
    while b"Hello, world!\n" not in got:
        piece = s.recv(4096)
        if not piece:
            break
        got += piece
    assert got.startswith(b"HTTP/1.1 200"), got
    return s


def traffic(srv):
    """One round of every kind; returns the sockets left idle and how many
    requests at least reached the parser with a complete request line (the
    sync worker reads one request per connection, a reset one may be
    dropped by the kernel before it is read)."""
    close = "Connection: close\r\n"
    big = b"x" * 20000
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    out = _talk(srv, _head("/_/hello", extra=close))
    assert out.startswith(b"HTTP/1.1 200"), out
    # keep-alive then pipelined (sync: one request per connection)
    out = _talk(srv, _head("/_/hello") + _head("/_/stream") + _head("/_/hello", "HEAD", close))
    assert out.startswith(b"HTTP/1.1 200"), out
    out = _talk(srv, _head("/_/echo", "POST", "Transfer-Encoding: chunked\r\n" + close)
                + chunked)
    assert b'"body": "hello world"' in out, out
    out = _talk(srv, _head("/_/noread", "POST", "Content-Length: %d\r\n" % len(big)) + big)
    assert out.startswith(b"HTTP/1.1 200"), out
    out = _talk(srv, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    out = _talk(srv, _head("/_/echo", "POST", "Transfer-Encoding: chunked\r\n") + b"zz\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    out = _talk(srv, _head("/_/raise-before"))
    assert out.startswith(b"HTTP/1.1 500"), out
    out = _talk(srv, _head("/_/raise-mid-body"))
    assert out.startswith(b"HTTP/1.1 200"), out
    out = _talk(srv, _head("/_/noread", "POST", "Content-Length: 10\r\nExpect: 100-continue\r\n"))
    assert out.startswith(b"HTTP/1.1 200"), out
    _vanish(srv, b"GET /_/hello HTTP/1.1\r\nHost: t\r\nX-Half: ")
    _vanish(srv, _head("/_/echo", "POST", "Content-Length: 1000\r\n") + b"only ten b")
    _vanish(srv, _head("/_/big") , reset=True)
    idle = [_left_idle(srv)]
    return idle, 12


def live(srv, gc_off=False):
    """(pid, {class: live count}, {class: made}) read by one request."""
    resp = srv.get("/_/live" + ("?gc=off" if gc_off else ""),
                   headers={"Connection": "close"})
    assert resp.status == 200, resp
    data = json.loads(resp.body)
    counts = data["live"]
    return (data["pid"], {k: v["made"] - v["freed"] for k, v in counts.items()},
            {k: v["made"] for k, v in counts.items()})


def _wait_closed(sockets, timeout=15.0):
    """Until the server closed each of ``sockets`` (EOF or reset), bounded."""
    deadline = time.monotonic() + timeout
    for s in sockets:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not s.recv(4096):
                    break
            except socket.timeout:
                break
            except OSError:
                break
        s.close()


@pytest.mark.parametrize("kind", sorted(WORKERS))
def test_no_object_outlives_its_connection(gunicorn_server, kind, e2e_report):
    srv = gunicorn_server(name="leaks-" + kind, workers=1, **WORKERS[kind])
    pid, before, made_before = live(srv, gc_off=True)
    assert before == IN_FLIGHT, before
    idle = []
    requests = 0
    for _ in range(ROUNDS):
        left, n = traffic(srv)
        idle += left
        requests += n
    _wait_closed(idle)
    # a vanished client is noticed by the worker on its own time: poll, bounded
    deadline = time.monotonic() + 15
    polls = 0
    while True:
        now_pid, now, made = live(srv)
        polls += 1
        if now == IN_FLIGHT or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert now_pid == pid, "the worker was replaced; log:\n%s" % srv.log_tail()
    made_requests = made["Request"] - made_before["Request"] - polls
    # the counters count: every request line parsed made a Request
    assert made_requests >= requests, (made_requests, requests)
    assert now == IN_FLIGHT, ("objects alive beyond the request reading them: %r "
                              "(%d requests served)\n%s" % (now, made_requests, srv.log_tail()))
    e2e_report("%s: %d requests, live afterwards %r" % (kind, made_requests, now))


# -- in process: the parser's own references ------------------------------------

def test_parser_objects_freed_by_reference_counting():
    """A parser's Request and Body refer back to it; close() breaks that
    cycle, so with the cyclic collector off everything is freed when the
    last reference goes, including after a malformed request and a parser
    that was never closed between two complete requests."""
    import gunicorn.config
    hp = _ext.http_parser
    config = hp.ParserConfig(gunicorn.config.Config())

    def totals():
        return {k: v["made"] - v["freed"] for k, v in hp.live_objects().items()}

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = totals()
        for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                     b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                     b"GET / HTTP/1.1\r\nBad\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\n"):
            parser = hp.RequestParser(config, None, ("127.0.0.1", 1), ("127.0.0.1", 2), None)
            parser.feed(data)
            parser.feed_eof()
            envs = []
            env = None
            try:
                for _ in range(5):
                    env = parser.parse()
                    if env is None or env is hp.STOP:
                        break
                    env["wsgi.input"].read()
                    envs.append(env)
            except Exception:
                pass
            made = totals()
            assert made["RequestParser"] == start["RequestParser"] + 1, made
            parser.close()
            del parser, envs, env
            assert totals() == start, (data, totals(), start)
    finally:
        if was_enabled:
            gc.enable()
