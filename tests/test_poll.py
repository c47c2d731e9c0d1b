"""``turboworkers._poll``: the thread worker's epoll and non-blocking reads.

Used in pure mode too (pure mode only swaps the HTTP code); skipped only when
the compiled module does not import.
"""
import errno
import os
import select
import socket
import threading

import pytest

try:
    from turboworkers import _poll
except ImportError as exc:  # no compiled extension in this install
    pytest.skip("turboworkers._poll does not import: %s" % exc, allow_module_level=True)

ARM = select.EPOLLIN | select.EPOLLONESHOT


@pytest.fixture
def poller():
    p = _poll.Poller()
    yield p
    p.close()


@pytest.fixture
def pairs():
    made = []

    def make():
        a, b = socket.socketpair()
        made.append((a, b))
        return a, b
    yield make
    for a, b in made:
        a.close()
        b.close()


def test_poll_one_returns_the_ready_fd_and_minus_one_on_timeout(poller, pairs):
    a, b = pairs()
    poller.register(a.fileno(), ARM)
    assert poller.poll_one(0) == -1
    assert poller.poll_one(0.01) == -1
    b.sendall(b"x")
    assert poller.poll_one(5) == a.fileno()
    # one-shot: not reported again until modified
    assert poller.poll_one(0.01) == -1
    poller.modify(a.fileno(), ARM)
    assert poller.poll_one(5) == a.fileno()


def test_ctl_errors_are_oserrors_with_errno(poller, pairs):
    a, _ = pairs()
    with pytest.raises(OSError) as info:
        poller.modify(a.fileno(), ARM)
    assert info.value.errno == errno.ENOENT
    poller.register(a.fileno(), ARM)
    with pytest.raises(OSError) as info:
        poller.register(a.fileno(), ARM)
    assert info.value.errno == errno.EEXIST
    poller.unregister(a.fileno())
    with pytest.raises(OSError) as info:
        poller.unregister(a.fileno())
    assert info.value.errno == errno.ENOENT


def test_closed_poller(pairs):
    p = _poll.Poller()
    assert p.fileno() >= 0
    p.close()
    assert p.fileno() == -1
    with pytest.raises(OSError):
        p.poll_one(0)
    p.close()  # twice: harmless


def test_threads_waiting_together_each_get_their_own_event(poller, pairs):
    # Several serving threads wait on one Poller: each must receive a
    # different ready fd (an event buffer shared between them would hand
    # two threads the same connection and lose another one).
    socks = [pairs() for _ in range(8)]
    for a, _ in socks:
        poller.register(a.fileno(), ARM)
    got, lock = [], threading.Lock()
    start = threading.Barrier(8)

    def wait():
        start.wait(5)
        fd = poller.poll_one(5)
        with lock:
            got.append(fd)

    threads = [threading.Thread(target=wait) for _ in range(8)]
    for t in threads:
        t.start()
    for _, b in socks:
        b.sendall(b"x")
    for t in threads:
        t.join(10)
    assert sorted(got) == sorted(a.fileno() for a, _ in socks)


def test_recv_nowait(pairs):
    a, b = pairs()
    assert _poll.recv_nowait(a.fileno(), 100) is None
    b.sendall(b"hello world")
    assert _poll.recv_nowait(a.fileno(), 5) == b"hello"
    assert _poll.recv_nowait(a.fileno(), 100) == b" world"
    big = os.urandom(200000)
    b.setblocking(False)
    sent = b.send(big)
    got = b""
    while len(got) < sent:
        piece = _poll.recv_nowait(a.fileno(), 1 << 20)
        assert piece, "the data sent is there to read"
        assert len(piece) <= 65536
        got += piece
    assert got == big[:sent]
    b.close()
    assert _poll.recv_nowait(a.fileno(), 100) == b""


def test_recv_nowait_errors(tmp_path):
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(OSError) as info:
            _poll.recv_nowait(f.fileno(), 10)
    assert info.value.errno == errno.ENOTSOCK
    with pytest.raises(OSError) as info:
        _poll.recv_nowait(-1, 10)
    assert info.value.errno == errno.EBADF


def test_lock_excludes_and_is_released_by_with():
    lock = _poll.Lock()
    count = [0]

    def bump():
        for _ in range(2000):
            with lock:
                v = count[0]
                # a bytecode boundary or two inside: the GIL may change hands here
                count[0] = v + 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert count[0] == 8000
    assert lock.acquire() is True
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


# -- parking: one idle thread waits in epoll_wait, the watcher adds more ---------

TICK = 0.002


def _eventually(check, limit=10.0):
    # bounded wait for a state the threads reach on their own (not a timing
    # assertion: the limit is generous and only stops a hung test)
    end = __import__("time").monotonic() + limit
    while not check():
        if __import__("time").monotonic() > end:
            return False
        __import__("time").sleep(0.005)
    return True


class _Servers:
    """Threads that serve a Poller as the thread worker does: take an event,
    read the byte, run ``work``, re-arm the connection. They wait with a
    long timeout, so that a parked thread only ever leaves the park because
    the watcher sent it (not because its wait ran out)."""

    def __init__(self, poller, n, work):
        self.poller = poller
        self.work = work
        self.stop = False
        self.served = []
        self.lock = threading.Lock()
        # level-triggered: once written, it wakes whichever thread waits
        self.stopper = socket.socketpair()
        poller.register(self.stopper[0].fileno(), select.EPOLLIN)
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self):
        while not self.stop:
            try:
                fd = self.poller.poll_one(60)
            except OSError:
                if self.stop:   # the Poller was closed under it
                    return
                raise
            if fd < 0 or self.stop:
                continue
            data = _poll.recv_nowait(fd, 100)
            self.work(fd, data)
            with self.lock:
                self.served.append(fd)
            try:
                self.poller.modify(fd, ARM)
            except OSError:
                if self.stop:
                    return
                raise

    def close(self):
        self.stop = True
        self.stopper[1].sendall(b"!")
        self.poller.close()     # wakes the parked threads
        for t in self.threads:
            t.join(10)
        for s in self.stopper:
            s.close()
        assert not any(t.is_alive() for t in self.threads)


def test_park_validates_its_arguments(poller):
    with pytest.raises(ValueError):
        poller.park(0, 4)
    with pytest.raises(ValueError):
        poller.park(2.0, 4)
    with pytest.raises(ValueError):
        poller.park(TICK, 0)
    poller.park(TICK, 4)
    with pytest.raises(RuntimeError):
        poller.park(TICK, 4)


def test_idle_threads_park_but_one(poller):
    poller.park(TICK, 4)
    servers = _Servers(poller, 4, lambda fd, data: None)
    try:
        assert _eventually(lambda: poller.parked == 3), poller.parked
    finally:
        servers.close()


@pytest.mark.parametrize("hold", ["blocked", "computing"])
def test_one_long_request_does_not_hold_up_the_next_connection(poller, pairs, hold):
    # The one thread that took an event either sleeps (releasing the GIL, as
    # an application blocked on a database does: a parked thread takes over
    # at the next tick) or computes without letting the GIL go (after a few
    # ticks a parked thread takes over anyway, and shares the GIL with it at
    # the interpreter's switch interval). Either way the second connection
    # must not wait for the first one's request.
    poller.park(TICK, 4)
    slow, fast = pairs(), pairs()
    for a, _ in (slow, fast):
        poller.register(a.fileno(), ARM)
    release = threading.Event()

    def work(fd, data):
        if fd != slow[0].fileno():
            return
        if hold == "blocked":
            release.wait(30)
        else:
            while not release.is_set():   # pure Python: holds the GIL
                pass

    servers = _Servers(poller, 4, work)
    try:
        assert _eventually(lambda: poller.parked == 3)
        slow[1].sendall(b"s")
        fast[1].sendall(b"f")
        assert _eventually(lambda: fast[0].fileno() in servers.served), poller.promotions
        assert slow[0].fileno() not in servers.served   # still held
        assert poller.promotions >= 1
    finally:
        release.set()
        servers.close()


def test_serving_threads_park_again_when_the_gil_is_busy(poller, pairs):
    # Connections whose requests block bring threads out of the park; once
    # the same connections only compute, threads beyond one just queue for
    # the GIL, and the watcher parks them again.
    poller.park(TICK, 4)
    conns = [pairs() for _ in range(8)]
    for a, _ in conns:
        poller.register(a.fileno(), ARM)
    mode = ["sleep"]
    clock = __import__("time")

    def work(fd, data):
        if mode[0] == "sleep":
            clock.sleep(0.01)
        else:
            end = clock.perf_counter() + 0.0005
            while clock.perf_counter() < end:
                pass
        # the client sends its next request at once
        for a, b in conns:
            if a.fileno() == fd:
                b.sendall(b"x")

    servers = _Servers(poller, 4, work)
    try:
        for _, b in conns:
            b.sendall(b"x")
        assert _eventually(lambda: poller.parked == 0), poller.parked
        mode[0] = "compute"
        assert _eventually(lambda: poller.demotions >= 1 and poller.parked >= 2), \
            (poller.demotions, poller.parked)
    finally:
        servers.close()


def test_close_wakes_parked_threads(pairs):
    p = _poll.Poller()
    p.park(TICK, 3)
    results = []

    def wait():
        results.append(p.poll_one(5))

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    assert _eventually(lambda: p.parked == 2)
    p.close()
    for t in threads:
        t.join(0.5)
    # the parked ones return at once; the one in epoll_wait on the closed
    # descriptor returns at its timeout or when the process ends
    assert sum(1 for t in threads if not t.is_alive()) >= 2
    assert results.count(-1) >= 2
