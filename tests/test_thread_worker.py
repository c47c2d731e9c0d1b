"""End to end: ``gunicorn -k turboworkers.EpollThreadWorker`` with real clients.

Real gunicorn processes (tests/servers.py) on loopback; the same tests run in
accelerated and in pure mode. No duration is asserted: waits are bounded only
so that a hang fails, and the head-of-line test asserts an order of events.
"""
import collections
import hashlib
import json
import os
import re
import signal
import socket
import threading
import time

import pytest

import servers
from turboworkers import _ext

TURBO_THREAD = "turboworkers.EpollThreadWorker"
ACCELERATED = _ext.MODE == "accelerated"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MB = 1 << 20


@pytest.fixture(scope="module")
def threaded(module_gunicorn_server):
    """``apps:app``, one worker, 4 threads: shared by the tests that leave it as they found it."""
    return module_gunicorn_server(name="threaded", worker_class=TURBO_THREAD,
                                  args=["--threads", "4", "--keep-alive", "10"])


# -- a raw keep-alive client --------------------------------------------------

class Client:
    """One connection; requests written raw, responses read one at a time."""

    def __init__(self, srv, timeout=20.0):
        self.host = srv.host_header
        self.sock = srv.connect(timeout=timeout)
        self.f = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def get(self, path, extra=b""):
        return b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), self.host.encode(), extra)

    def read(self, method=b"GET"):
        """(status code, {lower name: value}, body) of the next response; body dechunked."""
        line = self.f.readline()
        if not line:
            raise EOFError("connection closed before a response")
        while True:
            code = int(line.split()[1])
            headers = {}
            while True:
                h = self.f.readline()
                if h in (b"\r\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= code < 200:
                line = self.f.readline()
                continue
            break
        body = b""
        if method == b"HEAD" or code in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.f.readline().split(b";")[0], 16)
                if size == 0:
                    while self.f.readline() not in (b"\r\n", b""):
                        pass
                    break
                parts.append(self.f.read(size))
                self.f.read(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self.f.read(int(headers["content-length"]))
        else:
            body = self.f.read()
        return code, headers, body

    def closed_by_server(self):
        self.sock.settimeout(10.0)
        try:
            return self.f.read(1) == b""
        except OSError:
            return True

    def close(self):
        self.f.close()
        self.sock.close()


def _client(srv):
    return Client(srv)


# -- keep-alive, pipelining, framing ------------------------------------------

def test_keep_alive_serves_many_requests_on_one_connection(threaded):
    c = _client(threaded)
    try:
        ports = set()
        for i in range(10):
            c.send(c.get("/k%d" % i))
            code, headers, body = c.read()
            assert code == 200
            assert headers["connection"] == "keep-alive"
            env = json.loads(body)["environ"]
            assert env["PATH_INFO"] == "/k%d" % i
            assert env["wsgi.multithread"] is True
            ports.add(env["SERVER_PORT"])
        assert ports == {str(threaded.port)}
    finally:
        c.close()


def test_connection_close_and_http10(threaded):
    c = _client(threaded)
    try:
        c.send(c.get("/", b"Connection: close\r\n"))
        code, headers, _ = c.read()
        assert code == 200 and headers["connection"] == "close"
        assert c.closed_by_server()
    finally:
        c.close()
    c = _client(threaded)
    try:
        c.send(b"GET /_/hello HTTP/1.0\r\n\r\n")
        code, headers, body = c.read()
        assert code == 200 and body == b"Hello, world!\n"
        assert c.closed_by_server()
    finally:
        c.close()


def test_pipelined_requests_are_answered_in_order(threaded):
    c = _client(threaded)
    try:
        reqs = b"".join(c.get("/p%d" % i) for i in range(8))
        reqs += (b"POST /p8 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                 + c.get("/p9"))
        c.send(reqs)
        for i in range(10):
            code, _, body = c.read()
            assert code == 200
            data = json.loads(body)
            assert data["environ"]["PATH_INFO"] == "/p%d" % i
            if i == 8:
                assert data["body"] == "hello"
    finally:
        c.close()


def test_chunked_request_and_chunked_response(threaded):
    c = _client(threaded)
    try:
        c.send(b"POST /chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n")
        code, headers, body = c.read()
        assert code == 200
        assert json.loads(body)["body"] == "hello world"
        c.send(c.get("/_/stream?n=5"))
        code, headers, body = c.read()
        assert code == 200 and headers["transfer-encoding"] == "chunked"
        assert body == b"".join(b"piece %d\n" % i for i in range(5)) + b"end\n"
        # the connection is still usable after a chunked response
        c.send(c.get("/_/hello"))
        assert c.read()[2] == b"Hello, world!\n"
    finally:
        c.close()


def test_head_has_no_body(threaded):
    c = _client(threaded)
    try:
        c.send(b"HEAD /_/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        code, headers, body = c.read(b"HEAD")
        assert code == 200 and headers["content-length"] == "14" and body == b""
        c.send(c.get("/_/hello"))
        assert c.read()[2] == b"Hello, world!\n"
    finally:
        c.close()


def test_expect_100_continue(threaded):
    c = _client(threaded)
    try:
        c.send(b"POST /cont HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
               b"Expect: 100-continue\r\n\r\n")
        c.sock.settimeout(10.0)
        assert c.f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert c.f.readline() == b"\r\n"
        c.send(b"body")
        code, _, body = c.read()
        assert code == 200 and json.loads(body)["body"] == "body"
    finally:
        c.close()


def test_large_upload_streams_through_wsgi_input(threaded):
    payload = os.urandom(10 * MB)
    c = _client(threaded)
    try:
        c.send(b"POST /_/digest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload))
        c.send(payload)
        code, _, body = c.read()
        assert code == 200
        assert json.loads(body) == {"length": len(payload),
                                    "sha256": hashlib.sha256(payload).hexdigest()}
        c.send(c.get("/_/hello"))
        assert c.read()[2] == b"Hello, world!\n"
    finally:
        c.close()


def test_unread_body_is_skipped_before_the_next_request(threaded):
    c = _client(threaded)
    try:
        c.send(b"POST /_/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000
               + c.get("/after"))
        assert c.read()[2] == b"Hello, world!\n"
        assert json.loads(c.read()[2])["environ"]["PATH_INFO"] == "/after"
    finally:
        c.close()


def test_bad_request_gets_400_and_close(threaded):
    c = _client(threaded)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        code, _, _ = c.read()
        assert code == 400
        assert c.closed_by_server()
    finally:
        c.close()


# -- slow and vanishing clients -------------------------------------------------

def test_slow_client_does_not_hold_the_only_thread(gunicorn_server):
    srv = gunicorn_server(name="one-thread", worker_class=TURBO_THREAD,
                          args=["--threads", "1", "--keep-alive", "10"])
    slow = _client(srv)
    try:
        head = slow.get("/slow")
        # the first half of the head arrives, then nothing for a while
        slow.send(head[:10])
        # meanwhile other clients are served by the one thread
        for i in range(5):
            resp = srv.get("/_/hello")
            assert resp.status == 200
            time.sleep(0.05)
            slow.send(head[10 + i:11 + i])
        slow.send(head[15:])
        code, _, body = slow.read()
        assert code == 200 and json.loads(body)["environ"]["PATH_INFO"] == "/slow"
    finally:
        slow.close()


def test_client_that_disconnects_mid_response(threaded):
    pids = threaded.worker_pids()
    for _ in range(3):
        c = _client(threaded)
        c.send(c.get("/_/big?size=%d" % (32 * MB)))
        c.f.read(1000)
        # a reset, not a polite close: the server's next write fails
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    for _ in range(5):
        assert threaded.get("/_/hello").status == 200
    assert threaded.worker_pids() == pids


# -- concurrency -----------------------------------------------------------------

def test_head_of_line_fast_requests_pass_a_slow_one(gunicorn_server, tmp_path):
    srv = gunicorn_server(name="hol", worker_class=TURBO_THREAD,
                          args=["--threads", "4", "--keep-alive", "30"])
    marker = str(tmp_path / "slow-started")
    order = []
    lock = threading.Lock()
    slow = _client(srv)
    try:
        # a keep-alive connection first makes a fast request, then a slow one
        slow.send(slow.get("/_/hello"))
        assert slow.read()[0] == 200
        slow.send(slow.get("/_/sleep?s=1&marker=%s" % marker))
        deadline = time.monotonic() + 20
        while not os.path.exists(marker):
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        errors = []

        def fast(i):
            try:
                c = _client(srv)
                try:
                    for j in range(5):
                        c.send(c.get("/_/hello"))
                        assert c.read()[0] == 200
                finally:
                    c.close()
                with lock:
                    order.append("fast%d" % i)
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=fast, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        code, _, body = slow.read()
        with lock:
            order.append("slow")
        assert code == 200 and body == b"slept\n"
        for t in threads:
            t.join(30)
        assert not errors
        assert len(order) == 21
        assert order[-1] == "slow", order
    finally:
        slow.close()


def test_graceful_shutdown_under_load_loses_nothing(gunicorn_server, tmp_path):
    srv = gunicorn_server(name="graceful", worker_class=TURBO_THREAD, workers=2,
                          args=["--threads", "4", "--keep-alive", "10",
                                "--graceful-timeout", "15"])
    stop = threading.Event()
    done = []
    failures = []
    marker = str(tmp_path / "in-flight")

    def client(i):
        c = _client(srv)
        try:
            while not stop.is_set():
                path = "/_/sleep?s=0.5&marker=%s" % marker if i == 0 else "/_/hello"
                c.send(c.get(path))
                code, headers, _ = c.read()
                if code != 200:
                    failures.append(code)
                done.append(i)
                if headers.get("connection") == "close":
                    c.close()
                    if stop.is_set():
                        return
                    c = _client(srv)
        except Exception as e:
            failures.append(repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while (len(done) < 50 or not os.path.exists(marker)) and time.monotonic() < deadline:
        time.sleep(0.01)
    before = len(done)
    in_flight = os.path.exists(marker)
    # clients finish the request they are making and stop; a sleeping
    # request is in flight while the workers are told to stop
    if in_flight:
        os.unlink(marker)
    stop.set()
    srv.terminate()
    for t in threads:
        t.join(30)
    assert not failures, failures
    assert before >= 50 and in_flight
    assert srv.wait_exit(30) == 0


def test_worker_connections_caps_open_connections(gunicorn_server):
    srv = gunicorn_server(name="capped", worker_class=TURBO_THREAD,
                          args=["--threads", "2", "--worker-connections", "3",
                                "--keep-alive", "30"])
    # three clients in the middle of their heads: open, but holding no thread
    held = [_client(srv) for _ in range(3)]
    try:
        for c in held:
            c.send(b"GET /_/hello HTTP/1.1\r\nHost: x\r\n")
        srv.wait_for_log(r"3 connections open \(worker_connections\), accepting paused")
        late = _client(srv)
        try:
            late.send(late.get("/_/hello"))
            late.sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                late.sock.recv(1, socket.MSG_PEEK)
            # one of them ends its request and the connection: the fourth gets in
            held[0].send(b"Connection: close\r\n\r\n")
            assert held[0].read()[0] == 200
            late.sock.settimeout(20)
            assert late.read()[0] == 200
            for c in held[1:]:
                c.send(b"\r\n")
                assert c.read()[0] == 200
        finally:
            late.close()
    finally:
        for c in held:
            c.close()


def test_burst_larger_than_an_accept_batch_is_served(gunicorn_server):
    # The listener is edge-triggered: connections that arrive while the only
    # thread is in the application are reported once. The thread then takes
    # them in batches; a backlog left after a full batch must be reported
    # again, or those clients would wait for some later connection.
    # (rotation every 1000 accepts: the periodic re-registration must not
    # be what rescues the backlog here)
    srv = gunicorn_server(name="burst", worker_class=TURBO_THREAD,
                          args=["--threads", "1", "--worker-connections", "200"],
                          env={"TURBOWORKERS_EPOLL_ROTATE": "1000"})
    slow = _client(srv)
    burst = []
    try:
        slow.send(slow.get("/_/sleep?s=1"))
        for _ in range(45):
            c = _client(srv)
            burst.append(c)
            c.send(c.get("/_/hello", b"Connection: close\r\n"))
        assert slow.read()[0] == 200
        for c in burst:
            assert c.read()[0] == 200
    finally:
        slow.close()
        for c in burst:
            c.close()


def test_busy_worker_leaves_the_accept_rotation(gunicorn_server, tmp_path):
    # 16 threads: past 14 busy, a worker stops taking new connections while
    # another worker can. Rotation every 1000 accepts: the kernel then wakes
    # the first worker in its line for every connection (the one that takes
    # the slow requests below), so only load shedding sends the fast ones
    # to the other worker.
    srv = gunicorn_server(name="shed", worker_class=TURBO_THREAD, workers=2,
                          args=["--threads", "16", "--timeout", "60"],
                          env={"TURBOWORKERS_EPOLL_ROTATE": "1000"})
    slow, in_app = [], collections.Counter()
    try:
        while max(in_app.values(), default=0) < 15 and len(slow) < 29:
            marker = tmp_path / ("slow-%d" % len(slow))
            c = _client(srv)
            slow.append(c)
            c.send(c.get("/_/sleep?s=6&marker=%s" % marker))
            assert _wait_for_file(marker), "a slow request never reached the app"
            in_app[int(marker.read_text())] += 1
        busy_pid, count = in_app.most_common(1)[0]
        assert count == 15
        for _ in range(3):
            resp = srv.get("/_/pid")
            assert resp.status == 200
            assert int(servers.header(resp, "X-Worker-Pid")[0]) != busy_pid
    finally:
        for c in slow:
            c.close()


def _wait_for_file(path, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text():
            return True
        time.sleep(0.01)
    return False


def test_idle_keep_alive_connection_is_closed_after_keepalive(gunicorn_server):
    srv = gunicorn_server(name="ka1", worker_class=TURBO_THREAD,
                          args=["--threads", "2", "--keep-alive", "1"])
    c = _client(srv)
    try:
        c.send(c.get("/_/hello"))
        code, headers, _ = c.read()
        assert code == 200 and headers["connection"] == "keep-alive"
        assert c.closed_by_server()
    finally:
        c.close()


def test_heartbeat_while_every_thread_is_in_the_app(gunicorn_server):
    srv = gunicorn_server(name="beat", worker_class=TURBO_THREAD,
                          args=["--threads", "1", "--timeout", "2"])
    pids = srv.worker_pids()
    resp = srv.get("/_/sleep?s=4", timeout=30)
    assert resp.status == 200
    assert servers.header(resp, "X-Worker-Pid") == [str(pids[0])]
    assert "WORKER TIMEOUT" not in srv.log_text()
    assert srv.worker_pids() == pids


def test_max_requests_recycles_the_worker(gunicorn_server):
    srv = gunicorn_server(name="recycle", worker_class=TURBO_THREAD,
                          args=["--threads", "2", "--max-requests", "5"])
    first = srv.worker_pids()
    for _ in range(12):
        assert srv.get("/_/hello").status == 200
    # a stopping worker also answers the connections already in its backlog,
    # so the next worker may get fewer than 5 of the 12: one restart is sure
    srv.wait_for_log(r"Autorestarting worker after current request", count=1)
    deadline = time.monotonic() + 20
    while srv.worker_pids() == first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.worker_pids() != first


def test_max_requests_under_load_fails_no_request(gunicorn_server):
    srv = gunicorn_server(name="recycle-load", worker_class=TURBO_THREAD, workers=2,
                          args=["--threads", "4", "--max-requests", "10",
                                "--max-requests-jitter", "5"])
    first = set(srv.worker_pids())
    failures = []
    pids = set()

    def client():
        for _ in range(15):
            try:
                resp = srv.get("/_/pid")
                if resp.status != 200:
                    failures.append(resp.status)
                else:
                    pids.add(int(resp.body))
            except Exception as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    # 60 requests, at most 15 per worker life: workers were replaced
    assert pids - first


def test_hup_under_load_fails_no_request(gunicorn_server):
    srv = gunicorn_server(name="hup", worker_class=TURBO_THREAD, workers=2,
                          args=["--threads", "4"])
    old = set(srv.worker_pids())
    stop = threading.Event()
    failures = []
    served = []

    def client():
        while not stop.is_set():
            try:
                resp = srv.get("/_/pid")
                if resp.status != 200:
                    failures.append(resp.status)
                served.append(int(resp.body))
            except Exception as e:
                failures.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while len(served) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(srv.pid, signal.SIGHUP)
        # until the old workers are gone and new ones answered
        while time.monotonic() < deadline + 20:
            pids = set(srv.worker_pids())
            if pids and not pids & old and set(served[-10:]) - old:
                break
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures
    assert not set(srv.worker_pids()) & old
    assert set(served) - old


def test_refuses_a_mutex_accept_engine(gunicorn_server):
    with pytest.raises(servers.ServerError) as info:
        gunicorn_server(name="refused", worker_class=TURBO_THREAD,
                        env={"TURBOWORKERS_ACCEPT": "sem"})
    assert "TURBOWORKERS_ACCEPT=sem" in str(info.value)


def test_tcp_and_unix_listeners(gunicorn_server):
    srv = gunicorn_server(name="two-listeners", worker_class=TURBO_THREAD,
                          listeners=("tcp", "unix"), args=["--threads", "2"])
    for i in (0, 1):
        resp = srv.request("POST", "/l%d" % i, body=b"x" * 1000, listener=i)
        env = json.loads(resp.body)["environ"]
        assert env["PATH_INFO"] == "/l%d" % i
        assert json.loads(resp.body)["body"] == "x" * 1000
    assert env["SERVER_NAME"] == "localhost"


def test_tls(gunicorn_server, tmp_path):
    cert, key = servers.make_self_signed_cert(str(tmp_path))
    if cert is None:
        pytest.skip(key)
    srv = gunicorn_server(name="tls", worker_class=TURBO_THREAD,
                          args=["--threads", "2", "--certfile", cert, "--keyfile", key])
    ctx = servers.tls_client_context(cert)
    resp = srv.get("/_/hello", ssl_context=ctx)
    assert resp.body == b"Hello, world!\n"
    body = os.urandom(2 * MB)
    out = json.loads(srv.request("POST", "/_/digest", body=body, ssl_context=ctx).body)
    assert out == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    resp = srv.get("/_/file?size=200000", ssl_context=ctx)
    assert len(resp.body) == 200000
    # keep-alive and pipelining over TLS: later requests wait decrypted in
    # the SSL object, where epoll cannot see them
    raw = srv.connect(timeout=20.0)
    tls = ctx.wrap_socket(raw, server_hostname=None)
    c = Client.__new__(Client)
    c.host, c.sock, c.f = srv.host_header, tls, tls.makefile("rb")
    try:
        # several TLS records: each request carries a 7000-byte header
        c.send(b"".join(c.get("/t%d" % i, b"X-Pad: %s\r\n" % (b"p" * 7000)) for i in range(6)))
        for i in range(6):
            code, _, data = c.read()
            assert code == 200
            env = json.loads(data)["environ"]
            assert env["PATH_INFO"] == "/t%d" % i and env["wsgi.url_scheme"] == "https"
        c.send(c.get("/_/hello"))
        assert c.read()[2] == b"Hello, world!\n"
    finally:
        c.close()
    # a client speaking plain HTTP to the TLS port does not hurt the worker
    before = srv.worker_pids()
    servers.raw_exchange(lambda: srv.connect(), [("send", b"GET / HTTP/1.1\r\n\r\n"), ("shut",)],
                         timeout=10)
    assert srv.get("/_/hello", ssl_context=ctx).status == 200
    assert srv.worker_pids() == before


# -- the same bytes as gthread ---------------------------------------------------

DIFF_CASES = [
    b"GET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"HEAD /_/hello HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/hello HTTP/1.0\r\n\r\n",
    b"GET /_/hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /_/hello HTTP/1.0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/x\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nxyz",
    b"GET /_/stream?n=3 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/stream?n=3 HTTP/1.0\r\n\r\n",
    b"GET /_/status?code=204 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/status?code=304 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/multi_headers HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/write_callable HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/raise_before HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/file?size=100000 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /_/big?size=200000 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nCookie: a=b\r\n\r\n",
    b"POST /_/hello HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    # an unread body: gthread skips up to 64 KiB of it and keeps the connection,
    # and closes it after the response past that
    b"POST /_/hello HTTP/1.1\r\nHost: h\r\nContent-Length: 65535\r\n\r\n" + b"a" * 65535
    + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /_/hello HTTP/1.1\r\nHost: h\r\nContent-Length: 70000\r\n\r\n" + b"a" * 70000
    + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /_/hello HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"10000\r\n" + b"c" * 65536 + b"\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n",
]

_DATE = re.compile(rb"(\r\nDate:)[^\r\n]*")
_SERVER = re.compile(rb"(\r\nServer:)[^\r\n]*")


def _normalize(data, port):
    data = _DATE.sub(rb"\1 X", data)
    data = _SERVER.sub(rb"\1 X", data)
    return data.replace(b'"SERVER_PORT": "%d"' % port, b'"SERVER_PORT": "PORT"')


@pytest.fixture(scope="module")
def gthread_pair(module_gunicorn_server):
    common = ["--threads", "4", "--timeout", "10", "--graceful-timeout", "5"]
    stock = module_gunicorn_server(name="gthread", worker_class="gthread",
                                   args=common + ["--http-parser", "python"], wait=False)
    ours = module_gunicorn_server(name="ours-thread", worker_class=TURBO_THREAD,
                                  args=common + ([] if ACCELERATED else ["--http-parser", "python"]),
                                  wait=False)
    stock.wait_ready()
    ours.wait_ready()
    assert len(str(stock.port)) == len(str(ours.port))
    return stock, ours


@pytest.mark.parametrize("case", DIFF_CASES, ids=range(len(DIFF_CASES)))
def test_same_bytes_as_gthread(gthread_pair, case):
    answers = []
    for srv in gthread_pair:
        ex = servers.raw_exchange(lambda: srv.connect(timeout=20.0),
                                  [("send", case), ("shut",)], timeout=20.0)
        answers.append((_normalize(ex.data, srv.port), ex.closed, ex.error))
    assert answers[0][0], "stock gthread answered nothing"
    assert answers[1] == answers[0]
