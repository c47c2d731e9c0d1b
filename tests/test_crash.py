"""A worker process that dies in the middle of a request.

An application endpoint (``apps.crash``) kills its worker process before any
byte of an answer: with a real segmentation fault (a read of address 0) or
with ``os._exit(1)``. For each worker class, with two workers:

* the client of that request sees its connection closed with no response,
  as with stock gunicorn (the kernel closes the dead process's sockets);
* the master logs the death (``was sent SIGSEGV`` / ``exited with code 1``)
  and boots a replacement: a new pid appears and answers requests;
* requests from other clients succeed: while the fatal request is in flight
  (the other worker, and for the thread and gevent workers the dying one
  too, serve them), across the moment of death, and after the restart.

Across the moment of death: a SyncMutexWorker and an EpollThreadWorker with
``--threads 1`` whose only thread runs the fatal request accept nothing else,
so every concurrent request goes to the other worker and must succeed. A
GeventMutexWorker keeps serving other connections while one request runs
(that is its point), and the requests it holds when its process dies are
lost with it; there the other clients' traffic pauses while the process dies
and resumes once it is gone. (The accept mutex a dying gevent worker may hold,
a semaphore with SEM_UNDO or, in pure mode, an fcntl lock, is given back by
the kernel: otherwise the surviving worker could not accept, and the requests
after the death would hang.) Stock gunicorn's sync worker is run through the
same steps, to show the client sees the same thing.
"""
import threading
import time

import pytest

import servers

WORKERS = {
    "sync": dict(worker_class="turboworkers.SyncMutexWorker", args=[], through_death=True),
    "thread": dict(worker_class="turboworkers.EpollThreadWorker",
                   args=["--threads", "1", "--keep-alive", "2"], through_death=True),
    "gevent": dict(worker_class="turboworkers.GeventMutexWorker", args=["--keep-alive", "2"],
                   through_death=False),
    "stock-sync": dict(worker_class="sync", args=[], through_death=True),
}
DEATH_LOG = {"segv": r"Worker \(pid:%d\) was sent SIGSEGV",
             "exit": r"Worker \(pid:%d\) exited with code 1"}


def _hello(srv):
    """One request on a new connection: the pid that answered (fails the test otherwise)."""
    resp = srv.get("/_/pid", headers={"Connection": "close"}, timeout=20)
    assert resp.status == 200, resp
    return int(resp.body)


class _Load(threading.Thread):
    """Requests one after the other from another client until stopped (at most
    ``limit``); every failure is kept."""

    def __init__(self, srv, limit=2000):
        super().__init__(daemon=True)
        self.srv = srv
        self.limit = limit
        self.stop = threading.Event()
        self.pids = []
        self.failures = []

    def run(self):
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                self.pids.append(_hello(self.srv))
            except BaseException as e:  # every kind of failure is reported
                self.failures.append(repr(e))

    def finish(self):
        self.stop.set()
        self.join(30)
        assert not self.is_alive(), "the other client hung"
        return self.pids, self.failures


CASES = [(kind, how) for kind in ("sync", "thread", "gevent") for how in ("segv", "exit")] \
    + [("stock-sync", "segv")]


@pytest.mark.parametrize("kind,how", CASES)
def test_worker_dies_mid_request(gunicorn_server, tmp_path, kind, how):
    spec = WORKERS[kind]
    srv = gunicorn_server(name="crash-%s-%s" % (kind, how), workers=2,
                          worker_class=spec["worker_class"], args=spec["args"])
    before = set(srv.worker_pids())
    assert len(before) == 2
    marker = tmp_path / "in-flight"
    go = tmp_path / "go"
    result = {}

    def fatal():
        result["ex"] = servers.raw_exchange(
            lambda: srv.connect(timeout=30),
            [("send", b"GET /_/crash?how=%s&marker=%s&go=%s HTTP/1.1\r\nHost: t\r\n\r\n"
              % (how.encode(), str(marker).encode(), str(go).encode()))], timeout=30)

    client = threading.Thread(target=fatal, daemon=True)
    client.start()
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), srv.log_tail()
    time.sleep(0.05)  # the pid is written before the file is closed
    victim = int(marker.read_text())
    assert victim in before

    # while the fatal request is in flight, other clients are served
    load = _Load(srv)
    load.start()
    deadline = time.monotonic() + 20
    while len(load.pids) < 20 and not load.failures and time.monotonic() < deadline:
        time.sleep(0.01)
    if not spec["through_death"]:
        pids, failures = load.finish()
        assert not failures, failures
        assert len(pids) >= 20
    go.write_text("now")
    client.join(40)
    assert not client.is_alive()
    ex = result["ex"]
    # no answer at all: the connection just ends (FIN, or a reset)
    assert ex.closed and ex.data == b"", ex

    srv.wait_for_log(DEATH_LOG[how] % victim, timeout=20)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = set(srv.worker_pids())
        if victim not in now and len(now) == 2:
            break
        time.sleep(0.05)
    now = set(srv.worker_pids())
    new = now - before
    assert victim not in now and len(new) == 1, (before, now, srv.log_tail())
    srv.wait_ready()

    if spec["through_death"]:
        # keep the other client going until the replacement has answered it
        deadline = time.monotonic() + 20
        while not new & set(load.pids) and not load.failures and time.monotonic() < deadline:
            time.sleep(0.02)
        pids, failures = load.finish()
        assert not failures, failures
        # the victim was busy with the fatal request from before the first of
        # these requests until its death
        assert victim not in pids, pids
    else:
        pids = []
        deadline = time.monotonic() + 20
        while not new & set(pids) and time.monotonic() < deadline:
            pids.append(_hello(srv))
    assert new & set(pids), "the replacement worker never answered: %r" % (pids[-20:],)
    # and after the restart, every request still succeeds
    for _ in range(10):
        assert _hello(srv) != victim
