"""The accept layer without gunicorn: its knobs, its choice of engine, the
Cython system calls (``turboworkers._accept``) and each engine's accept().

Several processes are needed to see a cross-process mutex work: the tests
fork children that do one thing and leave with ``os._exit``. Every wait is
bounded; nothing asserts a duration.

The compiled ``_accept`` module is used in pure mode too (pure mode only
swaps the HTTP code), so these tests run the same in both modes; the
Cython tests are skipped only when the module does not import.
"""
import errno
import fcntl
import os
import select
import signal
import socket
import tempfile
import threading
import time
import traceback

import pytest

from turboworkers import accept
from turboworkers.sync import SyncMutexWorker

try:
    from turboworkers import _accept
    _ACCEPT_IMPORT_ERROR = None
except ImportError as exc:  # no compiled extension in this install
    _accept = None
    _ACCEPT_IMPORT_ERROR = exc

needs_cython = pytest.mark.skipif(
    _accept is None, reason="turboworkers._accept does not import: %s" % (_ACCEPT_IMPORT_ERROR,))

WAIT = 10.0  # the bound of every wait for another process


# -- helpers ------------------------------------------------------------------

def fork_child(body):
    """Run ``body(write_fd)`` in a forked child; return (pid, read_fd).

    The child exits 0 when ``body`` returns and 1 when it raised (the
    traceback goes to stderr); it never returns into pytest.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(r)
            body(w)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def read_msg(fd, timeout=WAIT):
    """One message (up to 64 bytes) from a child, or fail after ``timeout``."""
    ready = select.select([fd], [], [], timeout)[0]
    assert ready, "the child said nothing within %.0f s" % timeout
    return os.read(fd, 64)


def reap(pid, timeout=WAIT):
    """The child's wait status; SIGKILL it if it is still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("child %d still running after %.0f s" % (pid, timeout))
        time.sleep(0.01)


def wait_until(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "%s: not within %.0f s" % (what, timeout)
        time.sleep(0.005)


def exit_code(status):
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def semaphore():
    if _accept is None:
        pytest.skip("turboworkers._accept does not import: %s" % (_ACCEPT_IMPORT_ERROR,))
    sem = _accept.Semaphore.create()
    try:
        yield sem
    finally:
        sem.remove()


@pytest.fixture
def tcp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s
    finally:
        s.close()


def client_of(listener):
    fam = listener.family
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(WAIT)
    c.connect(listener.getsockname())
    return c


# -- knobs ----------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    (None, "auto"), ("auto", "auto"), ("", "auto"), ("  ", "auto"),
    ("queue", "queue"), ("sem", "sem"), ("fcntl", "fcntl"), ("epoll", "epoll"),
    ("none", "none"), ("SEM", "sem"), (" Epoll\n", "epoll"), ("AUTO", "auto"),
])
def test_engine_from_env_accepts_documented_values(raw, expected):
    env = {} if raw is None else {accept.ENV: raw}
    assert accept.engine_from_env(env) == expected


@pytest.mark.parametrize("raw", ["bogus", "semaphore", "queue,sem", "sem fcntl", "0", "epol",
                                 "auto1", "fcntl-lock", "\u00e9poll"])
def test_engine_from_env_refuses_others_with_one_clear_line(raw):
    with pytest.raises(accept.AcceptConfigError) as info:
        accept.engine_from_env({accept.ENV: raw})
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("TURBOWORKERS_ACCEPT=")
    assert repr(raw) in msg, "the message shows the value as it was given"
    for name in ("auto",) + accept.ENGINES:
        assert name in msg, "the message lists the accepted values"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw,expected", [
    (None, 16), ("1", 1), ("16", 16), (" 32 ", 32), ("1000000", 1000000), ("+3", 3),
])
def test_rotate_from_env_accepts_whole_numbers(raw, expected):
    env = {} if raw is None else {accept.ROTATE_ENV: raw}
    assert accept.rotate_from_env(env) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "-16", "1.5", "abc", "16x", "0x10", "1e3", "", " "])
def test_rotate_from_env_refuses_others_with_one_clear_line(raw):
    with pytest.raises(accept.AcceptConfigError) as info:
        accept.rotate_from_env({accept.ROTATE_ENV: raw})
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("TURBOWORKERS_EPOLL_ROTATE=%r" % raw)
    assert ">= 1" in msg


def test_idle_wait_stays_within_the_heartbeat_timeout():
    assert accept.idle_wait(0) == accept.MAX_IDLE_WAIT
    assert accept.idle_wait(None) == accept.MAX_IDLE_WAIT
    assert accept.idle_wait(30) == accept.MAX_IDLE_WAIT
    assert accept.idle_wait(1) == 0.5
    assert accept.idle_wait(0.01) == 0.05
    for timeout in (0.2, 0.5, 1, 1.5, 2, 5):
        assert accept.idle_wait(timeout) <= timeout / 2.0


# -- resolve ----------------------------------------------------------------------

ONE = [object()]
TWO = [object(), object()]
THREE = [object(), object(), object()]
AUTO = SyncMutexWorker.default_accept


def test_resolve_auto_is_queue_for_one_listener():
    assert accept.resolve("auto", ONE, AUTO) == "queue"


@pytest.mark.parametrize("listeners", [TWO, THREE], ids=["two", "three"])
def test_resolve_auto_is_sem_for_several_listeners(listeners):
    expected = "sem" if accept._sys is not None else "fcntl"
    assert accept.resolve("auto", listeners, AUTO) == expected


@pytest.mark.parametrize("name", ["sem", "fcntl", "epoll", "none"])
@pytest.mark.parametrize("listeners", [ONE, TWO], ids=["one", "two"])
def test_resolve_keeps_an_explicit_engine(name, listeners):
    expected = "fcntl" if name == "sem" and accept._sys is None else name
    assert accept.resolve(name, listeners, AUTO) == expected


def test_resolve_queue_with_one_listener():
    assert accept.resolve("queue", ONE, AUTO) == "queue"


@pytest.mark.parametrize("listeners", [TWO, THREE, []], ids=["two", "three", "none"])
def test_resolve_refuses_queue_unless_one_listener(listeners):
    with pytest.raises(accept.AcceptConfigError) as info:
        accept.resolve("queue", listeners, AUTO)
    msg = str(info.value)
    assert "\n" not in msg
    assert "TURBOWORKERS_ACCEPT=queue" in msg and "(there are %d)" % len(listeners) in msg


def test_resolve_refuses_queue_chosen_by_auto_for_two_listeners():
    with pytest.raises(accept.AcceptConfigError):
        accept.resolve("auto", TWO, lambda listeners: "queue")


def test_resolve_sem_without_the_extension_is_fcntl(monkeypatch):
    monkeypatch.setattr(accept, "_sys", None)
    assert accept.resolve("sem", TWO, AUTO) == "fcntl"
    assert accept.resolve("auto", TWO, AUTO) == "fcntl"
    assert accept.resolve("auto", ONE, AUTO) == "queue"


def test_compiled_accept_module_is_used_whenever_it_imports():
    """Pure mode swaps the HTTP code only: the accept engines keep the compiled calls."""
    if _accept is None:
        assert accept._sys is None
    else:
        assert accept._sys is _accept
        import importlib.machinery
        assert _accept.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


# -- Semaphore ------------------------------------------------------------------------

@needs_cython
def test_semaphore_create_acquire_release_remove(semaphore):
    sem = semaphore
    assert sem.semid >= 0
    assert sem.value() == 1 and sem.waiting() == 0
    assert not sem.held
    assert sem.acquire(1.0) is True
    assert sem.held and sem.value() == 0
    # a second handle in the same process: the semaphore is taken, the wait times out
    other = _accept.Semaphore(sem.semid)
    assert other.acquire(0.05) is False
    assert other.try_acquire() is False
    assert not other.held
    other.release()  # not held: nothing happens
    assert sem.value() == 0
    sem.release()
    assert not sem.held and sem.value() == 1
    sem.release()  # released twice: still one
    assert sem.value() == 1
    assert other.try_acquire() is True and sem.value() == 0
    other.release()
    assert sem.value() == 1
    assert sem.acquire(0) is True  # a zero time-out takes a free semaphore
    sem.release()


@needs_cython
def test_semaphore_removed_refuses_every_operation():
    sem = _accept.Semaphore.create()
    semid = sem.semid
    sem.remove()
    sem.remove()  # removing twice is harmless
    gone = _accept.Semaphore(semid)
    for call in (gone.value, gone.waiting, lambda: gone.acquire(0.01), gone.try_acquire):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno in (errno.EINVAL, errno.EIDRM)


@needs_cython
def test_semaphore_waiter_in_another_process_gets_it_on_release(semaphore):
    sem = semaphore
    assert sem.acquire(1.0)

    def child(w):
        mine = _accept.Semaphore(sem.semid)
        os.write(w, b"waiting")
        got = mine.acquire(WAIT)
        os.write(w, b"got" if got else b"timeout")
        if got:
            mine.release()

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"waiting"
        wait_until(lambda: sem.waiting() == 1, "the child waits for the semaphore")
        assert sem.value() == 0
        sem.release()
        assert read_msg(r) == b"got"
        assert exit_code(reap(pid)) == 0
    finally:
        os.close(r)
    assert sem.value() == 1 and sem.waiting() == 0


@needs_cython
def test_semaphore_waiters_are_served_in_arrival_order(semaphore):
    sem = semaphore
    assert sem.acquire(1.0)
    r_all, w_all = os.pipe()

    def child_named(tag):
        def child(w):
            mine = _accept.Semaphore(sem.semid)
            if mine.acquire(WAIT):
                os.write(w_all, tag)
                mine.release()
        return child

    pids = []
    try:
        for i, tag in enumerate((b"a", b"b", b"c")):
            pid, r = fork_child(child_named(tag))
            os.close(r)
            pids.append(pid)
            wait_until(lambda: sem.waiting() == i + 1, "child %s waits" % tag.decode())
        os.close(w_all)
        w_all = None
        sem.release()
        order = b""
        while len(order) < 3:
            order += read_msg(r_all)
        assert order == b"abc"
        for pid in pids:
            assert exit_code(reap(pid)) == 0
    finally:
        if w_all is not None:
            os.close(w_all)
        os.close(r_all)


@needs_cython
def test_semaphore_holder_killed_releases_it(semaphore):
    """SEM_UNDO: the kernel gives back what a dead holder took."""
    sem = semaphore

    def child(w):
        mine = _accept.Semaphore(sem.semid)
        assert mine.acquire(WAIT)
        os.write(w, b"held")
        time.sleep(60)  # killed before it wakes

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"held"
        assert sem.value() == 0
        assert sem.acquire(0.05) is False
        os.kill(pid, signal.SIGKILL)
        status = reap(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        os.close(r)
    assert sem.value() == 1
    assert sem.acquire(WAIT) is True
    sem.release()
    assert sem.value() == 1


@needs_cython
def test_semaphore_killed_waiter_is_no_longer_counted(semaphore):
    sem = semaphore
    assert sem.acquire(1.0)

    def child(w):
        os.write(w, b"waiting")
        _accept.Semaphore(sem.semid).acquire(60)

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"waiting"
        wait_until(lambda: sem.waiting() == 1, "the child waits")
        os.kill(pid, signal.SIGKILL)
        reap(pid)
    finally:
        os.close(r)
    assert sem.waiting() == 0 and sem.value() == 0
    sem.release()
    assert sem.value() == 1


@needs_cython
def test_semaphore_acquire_returns_false_when_a_signal_interrupts_it(semaphore):
    sem = semaphore
    assert sem.acquire(1.0)

    def child(w):
        signal.signal(signal.SIGUSR1, lambda *a: None)
        os.write(w, b"waiting")
        got = _accept.Semaphore(sem.semid).acquire(60)
        os.write(w, b"interrupted" if not got else b"got")

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"waiting"
        wait_until(lambda: sem.waiting() == 1, "the child waits")
        os.kill(pid, signal.SIGUSR1)
        assert read_msg(r) == b"interrupted"
        assert exit_code(reap(pid)) == 0
    finally:
        os.close(r)
    sem.release()


# -- FileLock ----------------------------------------------------------------------

@pytest.fixture
def lock_path(tmp_path):
    path = tmp_path / "turboworkers-accept-test.lock"
    path.write_bytes(b"")
    return str(path)


@needs_cython
def test_file_lock_between_two_processes(lock_path):
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    lock = _accept.FileLock(fd)
    try:
        assert lock.fd == fd and not lock.held
        assert lock.acquire(True) is True and lock.held

        def child(w):
            mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
            os.write(w, b"busy" if mine.acquire(False) is False else b"free")
            got = mine.acquire(True)  # blocks until the parent releases
            os.write(w, b"got" if got else b"interrupted")
            mine.release()

        pid, r = fork_child(child)
        try:
            assert read_msg(r) == b"busy"
            # the child now sleeps in F_SETLKW; nothing to count, so release and see it get the lock
            lock.release()
            assert not lock.held
            assert read_msg(r) == b"got"
            assert exit_code(reap(pid)) == 0
        finally:
            os.close(r)
        assert lock.acquire(False) is True
        lock.release()
        lock.release()  # not held: nothing happens
    finally:
        os.close(fd)


@needs_cython
def test_file_lock_released_when_the_holder_is_killed(lock_path):
    def child(w):
        mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
        assert mine.acquire(True)
        os.write(w, b"held")
        time.sleep(60)  # killed before it wakes

    pid, r = fork_child(child)
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    try:
        assert read_msg(r) == b"held"
        lock = _accept.FileLock(fd)
        assert lock.acquire(False) is False and not lock.held
        os.kill(pid, signal.SIGKILL)
        status = reap(pid)
        assert os.WIFSIGNALED(status)
        assert lock.acquire(False) is True, "the kernel releases a dead holder's lock"
        lock.release()
    finally:
        os.close(r)
        os.close(fd)


@needs_cython
def test_file_lock_waiter_interrupted_by_a_signal_returns_false(lock_path):
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    lock = _accept.FileLock(fd)
    assert lock.acquire(True)

    def child(w):
        signal.signal(signal.SIGUSR1, lambda *a: None)  # no SA_RESTART: F_SETLKW returns EINTR
        mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
        os.write(w, b"waiting")
        os.write(w, b"interrupted" if mine.acquire(True) is False else b"got")

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"waiting"
        # the child may not be asleep in F_SETLKW yet: signal it until it answers
        deadline = time.monotonic() + WAIT
        answer = b""
        while not answer:
            os.kill(pid, signal.SIGUSR1)
            if select.select([r], [], [], 0.05)[0]:
                answer = os.read(r, 64)
            assert time.monotonic() < deadline, "the child never left F_SETLKW"
        assert answer == b"interrupted"
        assert exit_code(reap(pid)) == 0
    finally:
        os.close(r)
        lock.release()
        os.close(fd)


@needs_cython
def test_file_lock_on_a_bad_fd_raises():
    with pytest.raises(OSError) as info:
        _accept.FileLock(-1).acquire(False)
    assert info.value.errno == errno.EBADF


# -- Epoll ------------------------------------------------------------------------------

@needs_cython
def test_epoll_exclusive_wakes_for_a_pending_connection(tcp_listener):
    ep = _accept.Epoll()
    try:
        assert ep.epfd >= 0
        fd = tcp_listener.fileno()
        ep.register(fd, True)
        assert ep.wait(0) == []
        c = client_of(tcp_listener)
        try:
            assert ep.wait(WAIT) == [fd]
            conn, _ = tcp_listener.accept()
            conn.close()
            assert ep.wait(0) == []
        finally:
            c.close()
    finally:
        ep.close()
    assert ep.epfd == -1
    ep.close()  # twice: harmless


@needs_cython
def test_epoll_one_exclusive_waiter_of_two_wakes(tcp_listener):
    """Two instances registered exclusive on one listener: a connection makes
    at least one ready, and the listener is accepted once."""
    a, b = _accept.Epoll(), _accept.Epoll()
    fd = tcp_listener.fileno()
    try:
        a.register(fd, True)
        b.register(fd, True)
        c = client_of(tcp_listener)
        try:
            ready = a.wait(WAIT) or b.wait(WAIT)
            assert ready == [fd]
            tcp_listener.setblocking(False)
            tcp_listener.accept()[0].close()
            with pytest.raises(BlockingIOError):
                tcp_listener.accept()
        finally:
            c.close()
    finally:
        a.close()
        b.close()


@needs_cython
def test_epoll_non_exclusive_and_unregister(tcp_listener):
    ep = _accept.Epoll()
    fd = tcp_listener.fileno()
    try:
        ep.register(fd)
        with pytest.raises(OSError) as info:
            ep.register(fd)
        assert info.value.errno == errno.EEXIST
        ep.unregister(fd)
        with pytest.raises(OSError) as info:
            ep.unregister(fd)
        assert info.value.errno == errno.ENOENT
        c = client_of(tcp_listener)
        try:
            assert ep.wait(0.05) == []  # nothing registered any more
            ep.register(fd, True)  # exclusive after a plain registration: allowed after DEL
            assert ep.wait(WAIT) == [fd]
        finally:
            c.close()
    finally:
        ep.close()


@needs_cython
def test_epoll_wait_interrupted_by_a_signal_returns_empty(tcp_listener):
    def child(w):
        signal.signal(signal.SIGUSR1, lambda *a: None)
        ep = _accept.Epoll()
        ep.register(tcp_listener.fileno(), True)
        os.write(w, b"waiting")
        fds = ep.wait(60)
        os.write(w, b"empty" if fds == [] else b"ready")

    pid, r = fork_child(child)
    try:
        assert read_msg(r) == b"waiting"
        deadline = time.monotonic() + WAIT
        answer = b""
        while not answer:
            os.kill(pid, signal.SIGUSR1)
            if select.select([r], [], [], 0.05)[0]:
                answer = os.read(r, 64)
            assert time.monotonic() < deadline, "the child never left epoll_wait"
        assert answer == b"empty"
        assert exit_code(reap(pid)) == 0
    finally:
        os.close(r)


# -- accept_fd ------------------------------------------------------------------------------

def _adopt(fd):
    """A Python socket owning ``fd`` (so it is closed)."""
    return socket.socket(fileno=fd)


def _check_new_fd(fd, nonblocking):
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK) == nonblocking


@needs_cython
@pytest.mark.parametrize("nonblocking", [False, True])
def test_accept_fd_ipv4_address_as_python_gives_it(tcp_listener, nonblocking):
    c1 = client_of(tcp_listener)
    c2 = client_of(tcp_listener)
    try:
        fd, addr = _accept.accept_fd(tcp_listener.fileno(), nonblocking)
        conn = _adopt(fd)
        py_conn, py_addr = tcp_listener.accept()
        try:
            _check_new_fd(fd, nonblocking)
            assert addr == c1.getsockname()
            assert py_addr == c2.getsockname()
            assert type(addr) is type(py_addr) and len(addr) == len(py_addr)
            assert [type(x) for x in addr] == [type(x) for x in py_addr]
            c1.sendall(b"ping")
            conn.settimeout(WAIT)
            assert conn.recv(4) == b"ping"
        finally:
            conn.close()
            py_conn.close()
    finally:
        c1.close()
        c2.close()


@needs_cython
def test_accept_fd_ipv6_address_as_python_gives_it():
    try:
        lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        lst.bind(("::1", 0))
    except OSError as e:
        pytest.skip("no IPv6 loopback here: %s" % e)
    with lst:
        lst.listen(4)
        c1, c2 = client_of(lst), client_of(lst)
        try:
            fd, addr = _accept.accept_fd(lst.fileno())
            conn = _adopt(fd)
            py_conn, py_addr = lst.accept()
            conn.close()
            py_conn.close()
            assert addr == c1.getsockname()
            assert py_addr == c2.getsockname()
            assert len(addr) == len(py_addr) == 4
            assert [type(x) for x in addr] == [type(x) for x in py_addr]
        finally:
            c1.close()
            c2.close()


@pytest.fixture
def unix_dir():
    # short: a unix socket path is limited to 107 bytes
    d = tempfile.mkdtemp(prefix="tw-acc-")
    try:
        yield d
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def _unix_pair_of_accepts(path, bind_client):
    """Two clients (bound by ``bind_client(sock, i)``) of a listener at ``path``:
    accept the first with accept_fd and the second with socket.accept()."""
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(4)
    clients = []
    try:
        for i in range(2):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(c)
            bind_client(c, i)
            c.settimeout(WAIT)
            c.connect(path)
        fd, addr = _accept.accept_fd(lst.fileno())
        _check_new_fd(fd, False)
        _adopt(fd).close()
        py_conn, py_addr = lst.accept()
        py_conn.close()
        return addr, py_addr, [c.getsockname() for c in clients]
    finally:
        for c in clients:
            c.close()
        lst.close()


@needs_cython
def test_accept_fd_unix_unbound_client(unix_dir):
    addr, py_addr, _ = _unix_pair_of_accepts(os.path.join(unix_dir, "l.sock"),
                                             lambda c, i: None)
    assert addr == py_addr == ""


@needs_cython
def test_accept_fd_unix_bound_client(unix_dir):
    def bind(c, i):
        c.bind(os.path.join(unix_dir, "client-\u00e9-%d.sock" % i))
    addr, py_addr, names = _unix_pair_of_accepts(os.path.join(unix_dir, "l.sock"), bind)
    assert addr == names[0] and py_addr == names[1]
    assert type(addr) is type(py_addr) is str


@needs_cython
def test_accept_fd_unix_abstract_client(unix_dir):
    tag = "tw-test-%d-%d" % (os.getpid(), time.monotonic_ns())

    def bind(c, i):
        c.bind("\0%s-%d" % (tag, i))
    addr, py_addr, names = _unix_pair_of_accepts(os.path.join(unix_dir, "l.sock"), bind)
    assert addr == names[0] and py_addr == names[1]
    assert type(addr) is type(py_addr) is bytes
    assert addr == b"\0" + ("%s-0" % tag).encode()


@needs_cython
def test_accept_fd_nothing_pending_is_none(tcp_listener):
    tcp_listener.setblocking(False)
    assert _accept.accept_fd(tcp_listener.fileno()) is None
    assert _accept.accept_fd(tcp_listener.fileno(), True) is None


@needs_cython
def test_accept_fd_on_a_bad_fd_raises(tmp_path):
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(OSError) as info:
            _accept.accept_fd(f.fileno())
    assert info.value.errno == errno.ENOTSOCK


# -- the engines, in this process ---------------------------------------------------------------

@pytest.fixture(params=["compiled", "stdlib"])
def sys_calls(request, monkeypatch):
    """Each engine with the compiled calls and with the stdlib fallback
    (what an install without a compiler runs)."""
    if request.param == "compiled":
        if _accept is None:
            pytest.skip("turboworkers._accept does not import: %s" % (_ACCEPT_IMPORT_ERROR,))
        monkeypatch.setattr(accept, "_sys", _accept)
    else:
        monkeypatch.setattr(accept, "_sys", None)
    return request.param


@pytest.fixture
def shared(monkeypatch, tmp_path):
    """What the master would have made, for this test only."""
    monkeypatch.setattr(accept.Shared, "semaphore", None)
    path = tmp_path / "turboworkers-accept-unit.lock"
    path.write_bytes(b"")
    monkeypatch.setattr(accept.Shared, "lock_path", str(path))
    sem = _accept.Semaphore.create() if _accept is not None else None
    if sem is not None:
        monkeypatch.setattr(accept.Shared, "semaphore", sem)
    try:
        yield accept.Shared
    finally:
        if sem is not None:
            sem.remove()


def _tcp_listeners(n):
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        out.append(s)
    return out


def _serve_one(engine, listener, payload, tries=50):
    """Connect to ``listener``, send ``payload``, and accept it through ``engine``."""
    c = client_of(listener)
    try:
        c.sendall(payload)
        for _ in range(tries):
            got = engine.accept()
            if got is not None:
                break
        else:
            raise AssertionError("%s accepted nothing in %d waits" % (engine.name, tries))
        lst, conn, addr = got
        try:
            assert lst is listener
            assert addr == c.getsockname()
            assert conn.gettimeout() is None, "handed over blocking, as gunicorn's sync worker expects"
            conn.settimeout(WAIT)
            assert conn.recv(len(payload)) == payload
        finally:
            conn.close()
    finally:
        c.close()


@pytest.mark.parametrize("name,nlisteners", [
    ("queue", 1), ("sem", 1), ("sem", 2), ("fcntl", 1), ("fcntl", 2),
    ("epoll", 1), ("epoll", 2), ("none", 1), ("none", 2),
])
def test_engine_accepts_on_every_listener(sys_calls, shared, name, nlisteners):
    if name == "sem" and accept._sys is None:
        name = accept.resolve(name, [None] * nlisteners, AUTO)
        assert name == "fcntl"
    listeners = _tcp_listeners(nlisteners)
    r, w = os.pipe()
    beats = []
    engine = accept.make_engine(name, listeners, 0.1, lambda: beats.append(1), r)
    try:
        assert engine.name == name
        assert engine.accept() is None, "nothing pending: the bounded wait ends with None"
        for round_ in range(3):
            for i, lst in enumerate(listeners):
                _serve_one(engine, lst, b"round %d listener %d" % (round_, i))
        if name == "sem":
            assert shared.semaphore.value() == 1, "released after each accept"
    finally:
        engine.close()
        for lst in listeners:
            lst.close()
        os.close(r)
        os.close(w)


def test_queue_engine_clears_the_listener_timeout_on_the_accepted_socket(shared):
    (lst,) = _tcp_listeners(1)
    engine = accept.make_engine("queue", [lst], 0.1, None, None)
    c = client_of(lst)
    try:
        c.sendall(b"x")
        got = None
        for _ in range(50):
            got = engine.accept()
            if got is not None:
                break
        assert got is not None
        conn = got[1]
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
            assert raw == accept._timeval(0)
            raw = lst.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
            assert raw != accept._timeval(0), "the listener keeps its bounded wait"
        finally:
            conn.close()
    finally:
        c.close()
        engine.close()
        lst.close()


def test_epoll_engine_rotates_its_registration(sys_calls, shared, monkeypatch):
    monkeypatch.setenv(accept.ROTATE_ENV, "2")
    listeners = _tcp_listeners(2)
    engine = accept.make_engine("epoll", listeners, 0.1, None, None)
    rotations = []
    real = engine._rotate
    monkeypatch.setattr(engine, "_rotate", lambda: (rotations.append(engine.accepted), real()))
    try:
        assert engine.rotate == 2
        for i in range(7):
            _serve_one(engine, listeners[i % 2], b"n%d" % i)
        assert rotations == [2, 4, 6]
    finally:
        engine.close()
        for lst in listeners:
            lst.close()


def test_none_engine_drains_the_wakeup_pipe(shared):
    listeners = _tcp_listeners(1)
    r, w = os.pipe()
    engine = accept.make_engine("none", listeners, 0.1, None, r)
    try:
        os.write(w, b".")
        assert engine.accept() is None
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        engine.close()
        listeners[0].close()
        os.close(r)
        os.close(w)


def test_mutex_engines_refuse_to_start_without_what_the_master_makes(monkeypatch):
    monkeypatch.setattr(accept.Shared, "semaphore", None)
    monkeypatch.setattr(accept.Shared, "lock_path", None)
    listeners = _tcp_listeners(1)
    try:
        for name in ("sem", "fcntl"):
            with pytest.raises(accept.AcceptConfigError) as info:
                accept.make_engine(name, listeners, 0.1, None, None)
            assert "TURBOWORKERS_ACCEPT=%s" % name in str(info.value)
    finally:
        listeners[0].close()


# -- Shared: made once, removed by its owner only ------------------------------------------------

def test_shared_is_made_once_and_removed_only_by_its_owner(monkeypatch, tmp_path):
    monkeypatch.setenv("TURBOWORKERS_LOCK_DIR", str(tmp_path))
    registered = []
    monkeypatch.setattr(accept.atexit, "register", registered.append)
    monkeypatch.setattr(accept.Shared, "semaphore", None)
    monkeypatch.setattr(accept.Shared, "lock_path", None)
    monkeypatch.setattr(accept.Shared, "owner", None)
    try:
        for _ in range(3):  # setup() runs at start and on every HUP
            accept.Shared.ensure_for("auto")
            accept.Shared.ensure_for("fcntl")
            accept.Shared.ensure_for("epoll")
        assert len(registered) == 1
        sem, path = accept.Shared.semaphore, accept.Shared.lock_path
        assert accept.Shared.owner == os.getpid()
        if _accept is not None:
            assert sem is not None and sem.value() == 1
        else:
            assert sem is None
        assert os.path.basename(path).startswith("turboworkers-accept-%d-" % os.getpid())
        assert path.endswith(".lock") and os.path.dirname(path) == str(tmp_path)

        # a forked worker leaving through sys.exit runs the master's atexit handlers
        def child(w):
            accept.Shared.remove()
        pid, r = fork_child(child)
        os.close(r)
        assert exit_code(reap(pid)) == 0
        assert os.path.exists(path)
        if sem is not None:
            assert sem.value() == 1

        accept.Shared.remove()
        assert not os.path.exists(path)
        assert accept.Shared.semaphore is None and accept.Shared.lock_path is None
        if sem is not None:
            with pytest.raises(OSError):
                sem.value()
        accept.Shared.remove()  # twice: harmless
    finally:
        if accept.Shared.semaphore is not None and accept.Shared.owner == os.getpid():
            accept.Shared.semaphore.remove()


# -- AcceptRound: an accept thread's round, without the GIL ---------------------

@pytest.fixture
def round_parts(tcp_listener):
    """(listener, epoll watching it, eventfd) for an AcceptRound."""
    if _accept is None:
        pytest.skip("turboworkers._accept does not import: %s" % (_ACCEPT_IMPORT_ERROR,))
    tcp_listener.setblocking(False)
    ep = _accept.Epoll()
    ep.register(tcp_listener.fileno(), True)
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    clients = []
    try:
        yield tcp_listener, ep, efd, clients
    finally:
        for c in clients:
            c.close()
        ep.close()
        os.close(efd)


def _connect(listener, clients, n=1):
    for _ in range(n):
        clients.append(client_of(listener))


def _close_accepted(got):
    for _, fd, _ in got:
        os.close(fd)


def _woken(efd):
    try:
        return int.from_bytes(os.read(efd, 8), "little")
    except BlockingIOError:
        return 0


@needs_cython
def test_accept_round_keeps_its_turn_at_the_semaphore_for_turn_accepts(round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 3, semaphore)
    for i in range(3):
        _connect(listener, clients)
        got, err, fatal, busy = rnd.round(16, WAIT)
        assert (len(got), err, fatal, busy) == (1, 0, 0, False)
        assert got[0][0] == listener.fileno()
        assert got[0][2] == clients[-1].getsockname()
        _close_accepted(got)
        rnd.pending = 0
        # held between the connections of a turn, given back after the third
        assert rnd.holding == (i < 2)
        assert semaphore.value() == (0 if i < 2 else 1)


@needs_cython
def test_accept_round_takes_no_more_than_the_rest_of_its_turn(round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 2, semaphore)
    _connect(listener, clients, 3)
    wait_until(lambda: ep.wait(0), "connections in the backlog")
    got, err, fatal, busy = rnd.round(16, WAIT)
    assert len(got) == 2 and not rnd.holding and semaphore.value() == 1
    _close_accepted(got)
    rnd.pending = 0
    got, _, _, _ = rnd.round(16, WAIT)
    assert len(got) == 1 and rnd.holding
    _close_accepted(got)
    rnd.give_back()
    assert not rnd.holding and semaphore.value() == 1
    rnd.give_back()  # not held: nothing happens
    assert semaphore.value() == 1


@needs_cython
def test_file_lock_held_elsewhere(lock_path):
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    lock = _accept.FileLock(fd)
    try:
        assert lock.held_elsewhere() is False
        assert lock.acquire(False)
        assert lock.held_elsewhere() is False       # held here, not elsewhere

        def child(w):
            mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
            os.write(w, b"held" if mine.held_elsewhere() else b"free")

        pid, r = fork_child(child)
        try:
            assert read_msg(r) == b"held"
            assert exit_code(reap(pid)) == 0
        finally:
            os.close(r)
        lock.release()
    finally:
        os.close(fd)


def _lock_waiter(lock_path, hold):
    """A child process's body: it says it waits, blocks on the FileLock,
    says it got it, holds it ``hold`` seconds and lets it go."""
    def child(w):
        mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
        os.write(w, b"waiting")
        mine.acquire(True)
        os.write(w, b"got")
        time.sleep(hold)
        mine.release()
    return child


@needs_cython
def test_file_lock_says_who_waits_for_it(lock_path):
    """A process blocked in acquire(True) is seen by the holder
    (waited_for), for the time of its wait only; a killed waiter is not."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    lock = _accept.FileLock(fd)
    try:
        assert lock.acquire(False) and lock.waited_for() is False

        pid, r = fork_child(_lock_waiter(lock_path, 0.3))
        try:
            assert read_msg(r) == b"waiting"
            wait_until(lock.waited_for, "the waiter seen")
            lock.release()
            assert read_msg(r) == b"got"
            assert lock.waited_for() is False and lock.held_elsewhere() is True
            assert exit_code(reap(pid)) == 0
        finally:
            os.close(r)
        assert lock.acquire(False)

        def killed(w):
            mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
            os.write(w, b"waiting")
            mine.acquire(True)

        pid, r = fork_child(killed)
        try:
            assert read_msg(r) == b"waiting"
            wait_until(lock.waited_for, "the waiter seen")
            os.kill(pid, signal.SIGKILL)
            reap(pid)
            assert lock.waited_for() is False
        finally:
            os.close(r)
        lock.release()
    finally:
        os.close(fd)


@needs_cython
def test_accept_round_lets_a_waiting_worker_have_the_fcntl_lock_after_a_full_turn(
        round_parts, lock_path):
    """The release of an fcntl lock wakes its waiters, and whoever runs first
    takes it: a releaser asking again at once would get it straight back.
    After a full turn the round waits until another process holds the lock
    (here ``yield_max`` is long, so the order is certain) before it asks again:
    the other worker's turn comes first."""
    listener, ep, efd, clients = round_parts
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    lock = _accept.FileLock(fd)
    rnd = _accept.AcceptRound(ep, efd, 16, 2, None, lock, 0.02, -1, 30.0)
    try:
        _connect(listener, clients, 3)
        wait_until(lambda: ep.wait(0), "connections in the backlog")
        got, err, fatal, busy = rnd.round(1, WAIT)
        assert len(got) == 1 and rnd.holding          # a turn is two accepts
        _close_accepted(got)
        rnd.pending = 0

        # a worker that waits for the lock meanwhile; it holds it a moment
        # and says when it got it
        pid, r = fork_child(_lock_waiter(lock_path, 0.2))
        try:
            assert read_msg(r) == b"waiting"
            time.sleep(0.1)         # the child is in F_SETLKW by now
            got, err, fatal, busy = rnd.round(1, WAIT)
            assert len(got) == 1 and not rnd.holding      # the turn is over
            _close_accepted(got)
            rnd.pending = 0
            got, err, fatal, busy = rnd.round(16, WAIT)
            # the third connection, accepted once the child had its turn
            assert len(got) == 1 and (err, fatal, busy) == (0, 0, False)
            assert select.select([r], [], [], 0)[0], "the round took the lock before the waiter"
            assert read_msg(r) == b"got"
            _close_accepted(got)
            assert exit_code(reap(pid)) == 0
        finally:
            os.close(r)
    finally:
        rnd.give_back()
        os.close(fd)


@needs_cython
def test_accept_round_idle_holder_lets_the_semaphore_go(round_parts, semaphore):
    _, ep, efd, _ = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore)
    assert rnd.round(16, 0.05) == ([], 0, 0, False)
    assert not rnd.holding and semaphore.value() == 1


@needs_cython
def test_accept_round_waits_for_a_semaphore_held_elsewhere(round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore)
    assert semaphore.acquire(0)
    _connect(listener, clients)
    assert rnd.round(16, 0.05) == ([], 0, 0, False)   # not its turn
    assert not rnd.holding
    semaphore.release()
    got, _, _, _ = rnd.round(16, WAIT)
    assert len(got) == 1 and rnd.holding and semaphore.value() == 0
    _close_accepted(got)
    rnd.give_back()


@needs_cython
def test_accept_round_passes_its_turn_while_the_loop_has_not_taken_the_last_batch(
        round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    # stuck_after=0: a batch not taken at the next round is deemed stuck
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore, None, 0.0)
    _connect(listener, clients)
    got, _, _, _ = rnd.round(16, WAIT)
    assert len(got) == 1 and rnd.pending == 1
    _close_accepted(got)
    _connect(listener, clients)
    # the event loop has not cleared ``pending``: the new connection stays
    # in the backlog and the semaphore goes to the others
    assert rnd.round(16, WAIT) == ([], 0, 0, True)
    assert not rnd.holding and semaphore.value() == 1
    rnd.pending = 0
    got, _, _, busy = rnd.round(16, WAIT)
    assert len(got) == 1 and not busy
    _close_accepted(got)
    rnd.give_back()


@needs_cython
def test_accept_round_wakes_the_loop_as_the_next_round_starts(round_parts):
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16)      # no mutex: every round accepts
    assert rnd.holding
    rnd.flush()                                  # nothing due: no wake-up
    assert _woken(efd) == 0
    _connect(listener, clients, 2)
    wait_until(lambda: ep.wait(0), "connections in the backlog")
    got, _, _, _ = rnd.round(1, WAIT)
    assert len(got) == 1 and rnd.holding
    _close_accepted(got)
    rnd.notify_next()
    assert _woken(efd) == 0                      # not yet
    rnd.pending = 0
    got, _, _, _ = rnd.round(16, WAIT)
    assert _woken(efd) == 1 and len(got) == 1
    _close_accepted(got)
    rnd.notify_next()
    rnd.flush()
    assert _woken(efd) == 1
    rnd.notify()
    assert _woken(efd) == 1


@needs_cython
def test_accept_round_reports_a_removed_semaphore_as_fatal(round_parts):
    _, ep, efd, _ = round_parts
    sem = _accept.Semaphore.create()
    sem.remove()
    rnd = _accept.AcceptRound(ep, efd, 16, 16, sem)
    got, err, fatal, busy = rnd.round(16, 0.05)
    assert got == [] and fatal in (errno.EINVAL, errno.EIDRM) and not rnd.holding


@needs_cython
def test_accept_round_a_batch_handed_over_just_now_is_not_a_stuck_loop(round_parts, semaphore):
    # Connections come one after the other: the next round starts right
    # after the hand-over, before the event loop could take the batch. That
    # is no reason to pass the turn (it would stall a steady stream of new
    # connections); only a batch left untaken for stuck_after seconds is.
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore, None, 60.0)
    for _ in range(3):
        _connect(listener, clients)
        got, _, _, busy = rnd.round(16, WAIT)
        assert len(got) == 1 and not busy and rnd.pending == 1
        _close_accepted(got)
    assert rnd.holding
    rnd.give_back()


@needs_cython
def test_accept_round_stop_fd_gives_the_turn_back_without_accepting(round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        ep.register(stop, False)
        rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore, None, 60.0, stop)
        _connect(listener, clients)
        got, _, _, _ = rnd.round(16, WAIT)
        assert len(got) == 1 and rnd.holding and semaphore.value() == 0
        _close_accepted(got)
        # the worker stops while a client is already connecting again
        os.write(stop, (1).to_bytes(8, "little"))
        _connect(listener, clients)
        wait_until(lambda: len(ep.wait(0)) == 2, "the stop and the listener both ready")
        assert rnd.round(16, WAIT) == ([], 0, 0, False)
        assert not rnd.holding and semaphore.value() == 1
        # the connection is still in the backlog, for another worker
        conn, _ = listener.accept()
        conn.close()
    finally:
        os.close(stop)


# -- AcceptRound: a turn handed to the event loop ------------------------------

@needs_cython
def test_turn_take_accept_from_and_end_turn(round_parts, semaphore):
    listener, ep, efd, clients = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 3, semaphore)
    assert rnd.accept_from(listener.fileno(), 16) == ([], 0)       # no turn: nothing
    assert rnd.take(WAIT) is True
    assert rnd.holding and semaphore.value() == 0 and rnd.turns == 1
    assert _woken(efd) == 1                                          # the event loop is told
    assert rnd.take(WAIT) is True and rnd.turns == 1 and _woken(efd) == 0  # held already
    _connect(listener, clients, 5)
    wait_until(lambda: ep.wait(0), "connections in the backlog")
    got, err = rnd.accept_from(listener.fileno(), 2)
    assert err == 0 and len(got) == 2 and rnd.turn_left == 1 and rnd.accepted == 2
    assert [addr for _, addr in got] == [c.getsockname() for c in clients[:2]]
    for fd, _ in got:
        assert os.get_blocking(fd) is False
        os.close(fd)
    # the turn's last accept, however many more wait
    got, err = rnd.accept_from(listener.fileno(), 16)
    assert len(got) == 1 and rnd.turn_left == 0 and rnd.accepted == 3
    os.close(got[0][0])
    assert rnd.accept_from(listener.fileno(), 16) == ([], 0)
    assert rnd.holding                              # ended by end_turn, not by the count
    assert rnd.end_turn() is True
    assert not rnd.holding and semaphore.value() == 1
    assert rnd.end_turn() is False and semaphore.value() == 1
    assert rnd.accept_from(listener.fileno(), 16) == ([], 0)
    # a new turn: a full count again, and the two waiting connections
    assert rnd.take(WAIT) and rnd.turn_left == 3 and rnd.turns == 2
    got, err = rnd.accept_from(listener.fileno(), 16)
    assert len(got) == 2 and err == 0 and rnd.turn_left == 1
    for fd, _ in got:
        os.close(fd)
    rnd.end_turn()


@needs_cython
def test_turn_take_times_out_while_another_holds_it(round_parts, semaphore):
    _, ep, efd, _ = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore)
    assert semaphore.try_acquire()
    try:
        assert rnd.take(0.05) is False
        assert not rnd.holding and rnd.turns == 0 and _woken(efd) == 0
    finally:
        semaphore.release()


@needs_cython
def test_turn_take_reports_a_removed_semaphore(round_parts):
    _, ep, efd, _ = round_parts
    sem = _accept.Semaphore.create()
    sem.remove()
    rnd = _accept.AcceptRound(ep, efd, 16, 16, sem)
    with pytest.raises(OSError) as info:
        rnd.take(0.05)
    assert info.value.errno in (errno.EINVAL, errno.EIDRM) and not rnd.holding


@needs_cython
def test_turn_accept_error_is_reported(round_parts, semaphore):
    _, ep, efd, _ = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore)
    assert rnd.take(WAIT)
    s = socket.socket()
    try:
        # not listening: accept4 fails with EINVAL
        assert rnd.accept_from(s.fileno(), 16) == ([], errno.EINVAL)
    finally:
        s.close()
        rnd.end_turn()
    assert semaphore.value() == 1


@needs_cython
def test_turn_ended_from_many_threads_at_once_is_let_go_once(round_parts, semaphore):
    # the event loop and the accept thread may both end a turn: the mutex
    # must be let go once, or two workers would hold it from then on. The
    # callers hold the GIL but end_turn lets it go around the release itself:
    # a turn that still reads as held while its release runs would be released
    # twice here.
    _, ep, efd, _ = round_parts
    rnd = _accept.AcceptRound(ep, efd, 16, 16, semaphore)
    for _ in range(50):
        assert rnd.take(WAIT)
        barrier = threading.Barrier(4)
        results = []

        def end():
            barrier.wait()
            results.append(rnd.end_turn())
        threads = [threading.Thread(target=end) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == [False, False, False, True]
        assert semaphore.value() == 1


@needs_cython
def test_turn_with_the_file_lock(round_parts, lock_path):
    _, ep, efd, _ = round_parts
    fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)

    def seen_from_another_process():
        def child(w):
            mine = _accept.FileLock(os.open(lock_path, os.O_RDWR))
            os.write(w, b"held" if mine.held_elsewhere() else b"free")
        pid, r = fork_child(child)
        try:
            msg = read_msg(r)
            assert exit_code(reap(pid)) == 0
            return msg
        finally:
            os.close(r)
    try:
        rnd = _accept.AcceptRound(ep, efd, 16, 2, None, _accept.FileLock(fd))
        assert rnd.take(WAIT) and rnd.holding and _woken(efd) == 1
        assert seen_from_another_process() == b"held"
        assert rnd.end_turn() is True and not rnd.holding
        assert seen_from_another_process() == b"free"
    finally:
        os.close(fd)
