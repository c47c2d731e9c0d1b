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
