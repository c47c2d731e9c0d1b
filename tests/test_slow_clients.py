"""Slow clients: request heads trickled in a byte at a time, and slow uploads.

Each worker class at its documented limit, next to the stock worker it
replaces where the two are meant to behave alike:

* SyncMutexWorker serves one request at a time, and a client trickling its
  head holds its worker until the master's ``timeout`` aborts it, exactly as
  with ``-k sync``: the same bytes reach the trickling client, the master
  boots a replacement, and with two workers the other one serves every
  normal request meanwhile.
* EpollThreadWorker holds no thread for a trickling head: with two threads,
  200 connections trickling their heads leave normal clients served. The
  documented bound is on each pause: ``max(keepalive, timeout)`` seconds
  between two pieces. Connections that keep trickling within it stay open;
  once they fall silent they are all closed, and the worker was never
  replaced. (gthread bounds a head differently, see the README's
  differences from gthread, so no stock run is compared here.)
* GeventMutexWorker times each head as ``-k gevent`` does: the whole head
  within ``keepalive`` seconds. 1,000 connections trickling their heads do
  not stop a normal client from being served, and all of them are closed at
  that bound while they are still trickling, with no byte sent to them, as
  stock gevent closes them.
* A slow upload (a body sent in small pieces with pauses) arrives whole, and
  other clients are served while it is read: by the other worker (sync), by
  another thread (thread), by the same process (gevent).

Normal clients must each get their answer; how fast is not measured. Every
wait is bounded.
"""
import hashlib
import json
import resource
import threading
import time

import pytest

import servers

TURBO = {"sync": "turboworkers.SyncMutexWorker", "thread": "turboworkers.EpollThreadWorker",
         "gevent": "turboworkers.GeventMutexWorker"}
STOCK = {"sync": "sync", "gevent": "gevent"}

THREAD_TRICKLERS = 200
GEVENT_TRICKLERS = 1000


def _ensure_fds(needed):
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (gunicorn, started
    from here, inherits it), or skip the test with the reason."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip("needs %d open files, the hard RLIMIT_NOFILE is %d" % (needed, hard))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as e:
        pytest.skip("cannot raise RLIMIT_NOFILE to %d: %s" % (needed, e))


class Tricklers:
    """Connections that send their request head one byte at a time."""

    HEAD_START = b"GET /_/hello HTTP/1.1\r\nHost: t\r\nX-Slow: "

    def __init__(self, srv, count):
        self.socks = []
        self.received = []
        self.open = []
        for _ in range(count):
            s = srv.connect(timeout=10)
            s.sendall(self.HEAD_START)
            s.setblocking(False)
            self.socks.append(s)
            self.received.append(b"")
            self.open.append(True)

    def _poll(self, i):
        """Read what the server sent; False once it closed the connection."""
        s = self.socks[i]
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    return False
                self.received[i] += data
        except BlockingIOError:
            return True
        except OSError:
            return False

    def step(self, send=True):
        """One round: notice closed connections, send one more byte on the others."""
        for i, s in enumerate(self.socks):
            if not self.open[i]:
                continue
            if not self._poll(i):
                self.open[i] = False
                continue
            if send:
                try:
                    s.send(b"a")
                except OSError:
                    self.open[i] = False

    def count_open(self):
        return sum(self.open)

    def close(self):
        for s in self.socks:
            s.close()


class NormalClient(threading.Thread):
    """Plain requests one after the other until stopped (at most ``limit``)."""

    def __init__(self, srv, limit=5000):
        super().__init__(daemon=True)
        self.srv = srv
        self.limit = limit
        self.stopping = threading.Event()
        self.answered = 0
        self.failures = []
        self.pids = set()

    def run(self):
        for _ in range(self.limit):
            if self.stopping.is_set():
                return
            try:
                resp = self.srv.get("/_/pid", headers={"Connection": "close"}, timeout=30)
                if resp.status != 200:
                    self.failures.append(resp)
                else:
                    self.pids.add(int(resp.body))
                    self.answered += 1
            except Exception as e:  # each failure is reported by the test
                self.failures.append(repr(e))

    def finish(self, at_least=1):
        """Stop after the request in progress (and at least ``at_least`` answers)."""
        deadline = time.monotonic() + 30
        while self.answered < at_least and not self.failures and time.monotonic() < deadline:
            time.sleep(0.02)
        self.stopping.set()
        self.join(40)
        assert not self.is_alive(), "a normal request got no answer"
        assert not self.failures, self.failures[:5]
        assert self.answered >= at_least
        return self.answered


def _upload(srv, size=60000, pieces=30, pause=0.03):
    """A body sent in ``pieces`` with a pause between them; the digest app's answer."""
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    s = srv.connect(timeout=30)
    try:
        s.sendall(b"POST /_/digest HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        step = -(-len(body) // pieces)
        for i in range(0, len(body), step):
            time.sleep(pause)
            s.sendall(body[i:i + step])
        data = servers.read_to_eof(s)
    finally:
        s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    assert json.loads(payload) == {"length": len(body),
                                   "sha256": hashlib.sha256(body).hexdigest()}


# -- SyncMutexWorker and -k sync -----------------------------------------------

def _trickle_until_closed(srv, seconds=30.0, every=0.2):
    """One connection trickling its head until the server ends it: the bytes
    it received (asserts it was ended within ``seconds``)."""
    t = Tricklers(srv, 1)
    try:
        deadline = time.monotonic() + seconds
        while t.count_open() and time.monotonic() < deadline:
            t.step()
            time.sleep(every)
        assert t.count_open() == 0, "the trickling connection was never ended\n%s" \
            % srv.log_tail()
        return t.received[0]
    finally:
        t.close()


@pytest.fixture(scope="module")
def sync_trickle_outcome(module_gunicorn_server):
    """What a head trickler got from each sync worker (``-k sync`` first), and
    whether every normal request meanwhile was answered."""
    out = {}
    for name in ("stock", "turbo"):
        worker = STOCK["sync"] if name == "stock" else TURBO["sync"]
        srv = module_gunicorn_server(name="slow-sync-" + name, worker_class=worker,
                                     workers=2, args=["--timeout", "2"])
        before = set(srv.worker_pids())
        normal = NormalClient(srv)
        normal.start()
        received = _trickle_until_closed(srv)
        srv.wait_for_log(r"WORKER TIMEOUT \(pid:\d+\)")
        answered = normal.finish(at_least=1)
        out[name] = dict(srv=srv, received=received, before=before, answered=answered)
    return out


@pytest.mark.parametrize("name", ["stock", "turbo"])
def test_sync_head_trickler_ended_at_timeout(sync_trickle_outcome, name):
    """The trickler's worker is aborted at ``timeout`` and replaced; the other
    worker answered every normal request meanwhile."""
    o = sync_trickle_outcome[name]
    srv = o["srv"]
    victim = int(srv.wait_for_log(r"WORKER TIMEOUT \(pid:(\d+)\)")[0])
    assert victim in o["before"]
    deadline = time.monotonic() + 20
    while victim in srv.worker_pids() or len(srv.worker_pids()) < 2:
        assert time.monotonic() < deadline, srv.log_tail()
        time.sleep(0.05)
    assert o["answered"] >= 1
    assert srv.get("/_/hello").status == 200


def test_sync_head_trickler_gets_what_stock_sends(sync_trickle_outcome):
    """The aborted worker leaves the trickling client the same bytes as
    ``-k sync``: the 500 error page written when the abort interrupts the
    read (no Date header in it)."""
    stock = sync_trickle_outcome["stock"]["received"]
    turbo = sync_trickle_outcome["turbo"]["received"]
    assert stock.startswith(b"HTTP/1.1 500 "), stock
    assert turbo == stock


@pytest.mark.parametrize("name", ["stock", "turbo"])
def test_sync_slow_upload(gunicorn_server, name):
    """A body sent in 30 pieces arrives whole; the other worker serves meanwhile."""
    worker = STOCK["sync"] if name == "stock" else TURBO["sync"]
    srv = gunicorn_server(name="slow-upload-sync-" + name, worker_class=worker, workers=2,
                          args=["--timeout", "30"])
    normal = NormalClient(srv)
    normal.start()
    _upload(srv)
    normal.finish(at_least=1)


# -- EpollThreadWorker -----------------------------------------------------------

def test_thread_worker_head_tricklers(gunicorn_server):
    """200 trickling heads, two threads: normal clients are served throughout;
    pauses shorter than the bound keep a connection; silence past it closes
    all of them; the worker is never replaced."""
    _ensure_fds(THREAD_TRICKLERS + 100)
    # the bound between two pieces: max(keepalive, timeout) = 3 s
    srv = gunicorn_server(name="slow-thread", worker_class=TURBO["thread"], workers=1,
                          args=["--threads", "2", "--keep-alive", "1", "--timeout", "3"])
    pid = srv.worker_pids()
    t = Tricklers(srv, THREAD_TRICKLERS)
    normal = NormalClient(srv)
    try:
        normal.start()
        # trickle for longer than the bound, a byte every 0.2 s
        end = time.monotonic() + 4.0
        for _ in range(100):
            if time.monotonic() >= end:
                break
            t.step()
            time.sleep(0.2)
        assert t.count_open() == THREAD_TRICKLERS, "closed while still trickling: %d" % (
            THREAD_TRICKLERS - t.count_open())
        # then silence: every one is closed at the bound
        _wait_all_closed(t, srv, 20, 0.1, send=False, what="silent")
        normal.finish(at_least=5)
    finally:
        normal.stopping.set()
        t.close()
    assert srv.worker_pids() == pid, "the worker was replaced\n%s" % srv.log_tail()


def _wait_all_closed(t, srv, within, pause, send, what):
    """Step the tricklers (sending or not) until the server has closed every
    one of them, bounded by ``within`` seconds; none was sent a byte."""
    deadline = time.monotonic() + within
    while t.count_open() and time.monotonic() < deadline:
        t.step(send=send)
        time.sleep(pause)
    assert t.count_open() == 0, "%d %s connections still open\n%s" % (
        t.count_open(), what, srv.log_tail())
    assert set(t.received) == {b""}, "a trickler was sent bytes"


def test_thread_worker_slow_upload(gunicorn_server):
    """One thread reads a slow upload; the other serves normal clients meanwhile."""
    srv = gunicorn_server(name="slow-upload-thread", worker_class=TURBO["thread"], workers=1,
                          args=["--threads", "2"])
    normal = NormalClient(srv)
    normal.start()
    _upload(srv)
    normal.finish(at_least=1)


# -- GeventMutexWorker and -k gevent -----------------------------------------------

@pytest.mark.parametrize("name", ["turbo", "stock"])
def test_gevent_head_tricklers(gunicorn_server, name):
    """1,000 trickling heads: a normal client is served meanwhile, and every
    trickler is closed at the keep-alive bound while it still trickles, with
    no byte sent to it (as ``-k gevent`` closes them)."""
    _ensure_fds(GEVENT_TRICKLERS + 200)
    worker = TURBO["gevent"] if name == "turbo" else STOCK["gevent"]
    srv = gunicorn_server(name="slow-gevent-" + name, worker_class=worker, workers=1,
                          args=["--keep-alive", "3",
                                "--worker-connections", str(GEVENT_TRICKLERS + 100)])
    pid = srv.worker_pids()
    normal = NormalClient(srv)
    t = Tricklers(srv, GEVENT_TRICKLERS)
    try:
        normal.start()
        _wait_all_closed(t, srv, 30, 0.2, send=True, what="trickling")
        normal.finish(at_least=5)
    finally:
        normal.stopping.set()
        t.close()
    assert srv.worker_pids() == pid, "the worker was replaced\n%s" % srv.log_tail()


def test_gevent_slow_upload(gunicorn_server):
    """A slow upload arrives whole while the same worker serves other clients."""
    srv = gunicorn_server(name="slow-upload-gevent", worker_class=TURBO["gevent"], workers=1)
    normal = NormalClient(srv)
    normal.start()
    _upload(srv)
    normal.finish(at_least=1)
