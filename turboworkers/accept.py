"""Who accepts the next connection: the accept engines of the turbo workers.

``TURBOWORKERS_ACCEPT`` chooses one; ``auto`` (the default) is each worker
class's own choice.

- ``queue``: idle workers sleep inside a blocking ``accept()`` on the one
  listener. The kernel queues such sleepers in arrival order and wakes only
  the first for a new connection: one wake-up per connection, and idle
  workers take turns. One listener only.
- ``sem``: a System V semaphore (with ``SEM_UNDO``, so a holder that dies
  releases it) made once by the master. Its holder waits for the listeners;
  the others wait for the semaphore, served in arrival order.
- ``fcntl``: the same with a POSIX record lock on a file of the master's,
  released by the kernel when its holder dies. Waiters are not served in
  order, and all of them wake when it is released.
- ``epoll``: every idle worker waits in its own epoll instance, the listeners
  registered with ``EPOLLEXCLUSIVE`` so that a connection wakes one waiter.
  The kernel favours the waiter that registered first, so a worker registers
  again after every ``TURBOWORKERS_EPOLL_ROTATE`` accepts (default 16), which
  sends it to the back of the line.
- ``none``: every idle worker waits in ``select()`` as stock gunicorn's do, and
  all of them wake for each connection. For comparison.

Each wait is bounded (``idle_wait``), so a worker beats its heartbeat and sees
a stop request even when no connection comes.
"""
import atexit
import errno
import os
import select
import socket
import struct
import tempfile
import threading
import time

try:
    from turboworkers import _accept as _sys
except ImportError:  # no compiled extension: fcntl and epoll from the stdlib
    _sys = None

ENV = "TURBOWORKERS_ACCEPT"
ROTATE_ENV = "TURBOWORKERS_EPOLL_ROTATE"
ENGINES = ("queue", "sem", "fcntl", "epoll", "none")

# Longest sleep in one wait: how soon an idle worker notices a stop request,
# and its heartbeat period when the timeout allows it.
MAX_IDLE_WAIT = 1.0

_RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR)


class AcceptConfigError(ValueError):
    """A bad TURBOWORKERS_ACCEPT or TURBOWORKERS_EPOLL_ROTATE value."""


def engine_from_env(environ=os.environ):
    """The engine asked for: one of ENGINES, or "auto"."""
    value = environ.get(ENV, "auto").strip().lower() or "auto"
    if value != "auto" and value not in ENGINES:
        raise AcceptConfigError("%s=%r: expected one of auto, %s"
                                % (ENV, environ.get(ENV), ", ".join(ENGINES)))
    return value


def rotate_from_env(environ=os.environ):
    raw = environ.get(ROTATE_ENV, "16").strip()
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise AcceptConfigError("%s=%r: expected a whole number >= 1"
                                % (ROTATE_ENV, environ.get(ROTATE_ENV)))
    return value


def idle_wait(timeout):
    """Seconds an idle worker may sleep and still beat within ``timeout``."""
    if not timeout:
        return MAX_IDLE_WAIT
    return max(0.05, min(MAX_IDLE_WAIT, timeout / 2.0))


def _timeval(seconds):
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))


_NO_TIMEOUT = _timeval(0)


def set_recv_timeout(sock, seconds):
    """Set SO_RCVTIMEO, which bounds a blocking accept() or recv()."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def defer_accept(sock):
    """Wake the accepting worker when the request's first bytes arrive, not
    at the end of the TCP handshake: it then reads at once instead of going
    back to sleep in recv(), one wake-up per connection instead of two."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_DEFER_ACCEPT"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        except OSError:
            pass


def _raw(listener):
    # gunicorn's listener objects wrap the real socket
    return getattr(listener, "sock", listener)


def _accept_from(listener):
    """Non-blocking accept on a ready listener: (listener, client, addr) or None."""
    try:
        client, addr = listener.accept()
    except OSError as e:
        if e.errno in _RETRY_ERRNOS:
            return None
        raise
    client.setblocking(True)
    return listener, client, addr


class Shared:
    """What the workers of one master share: its semaphore, its lock file.

    Made once in the master (a worker class's ``setup()`` runs at start, on
    every HUP and whenever gunicorn reads the setting), inherited by the
    workers through fork, removed when the master exits and never when a
    worker does.
    """
    semaphore = None
    lock_path = None
    owner = None

    @classmethod
    def ensure(cls, engine):
        if cls.owner is None:
            cls.owner = os.getpid()
            atexit.register(cls.remove)
        if engine == "sem" and cls.semaphore is None and _sys is not None:
            cls.semaphore = _sys.Semaphore.create()
        if engine == "fcntl" and cls.lock_path is None:
            tmpdir = os.environ.get("TURBOWORKERS_LOCK_DIR") or None
            fd, path = tempfile.mkstemp(prefix="turboworkers-accept-%d-" % os.getpid(),
                                        suffix=".lock", dir=tmpdir)
            os.close(fd)
            cls.lock_path = path

    @classmethod
    def ensure_for(cls, engine):
        """Make what the workers may need.

        Both the semaphore and the lock file, whatever ``engine`` says:
        gunicorn applies its ``--env`` / ``raw_env`` settings to the master's
        environment only after ``setup()``, so the workers may ask for an
        engine the master did not see.
        """
        if _sys is not None:
            cls.ensure("sem")
        cls.ensure("fcntl")

    @classmethod
    def remove(cls):
        # atexit handlers registered in the master also run in forked
        # workers that leave through sys.exit: only the master removes.
        if os.getpid() != cls.owner:
            return
        if cls.semaphore is not None:
            try:
                cls.semaphore.remove()
            except OSError:
                pass
            cls.semaphore = None
        if cls.lock_path is not None:
            try:
                os.unlink(cls.lock_path)
            except OSError:
                pass
            cls.lock_path = None


class Heartbeat:
    """Beat gunicorn's heartbeat at most once per period.

    The arbiter only asks for a beat within ``timeout`` seconds; a busy
    worker need not touch its heartbeat file on every connection.
    """

    def __init__(self, notify, period):
        self.notify = notify
        self.period = period
        self.last = -period

    def __call__(self):
        now = time.monotonic()
        if now - self.last >= self.period:
            self.last = now
            self.notify()


class _Waiter:
    """Waits until one of the listeners can accept, for at most ``wait`` s."""

    def __init__(self, listeners, wakeup_fd):
        self.listeners = listeners
        self.by_fd = {l.fileno(): l for l in listeners}
        self.wakeup_fd = wakeup_fd
        if _sys is not None:
            self.poller = _sys.Epoll()
        else:
            self.poller = select.epoll()
        for fd in self.by_fd:
            self.poller.register(fd, select.EPOLLIN) if _sys is None else self.poller.register(fd)

    def ready(self, wait):
        if _sys is not None:
            fds = self.poller.wait(wait)
        else:
            try:
                fds = [fd for fd, _ in self.poller.poll(wait)]
            except InterruptedError:
                fds = []
        return [self.by_fd[fd] for fd in fds if fd in self.by_fd]

    def close(self):
        self.poller.close()


# -- engines: accept() gives (listener, client, addr) or None -----------------

class QueueEngine:
    name = "queue"

    def __init__(self, listeners, wait, **_):
        if len(listeners) != 1:
            raise AcceptConfigError("%s=queue needs exactly one listener (there are %d); "
                                    "use sem, fcntl or epoll" % (ENV, len(listeners)))
        self.listener = listeners[0]
        self.sock = _raw(self.listener)
        self.sock.setblocking(True)
        set_recv_timeout(self.sock, wait)
        defer_accept(self.sock)
        self.fd = self.sock.fileno()

    def accept(self):
        try:
            if _sys is not None:
                # Not socket.accept(): after a signal it calls accept4() again
                # (PEP 475), and each call waits SO_RCVTIMEO anew. A master
                # sends SIGTERM to a surplus worker (after TTOU) once a
                # second, so the wait never ended, the worker never saw that
                # it must stop, and it stayed until killed for silence.
                got = _sys.accept_fd(self.fd)
                if got is None:  # timed out, or a signal came: the loop decides
                    return None
                try:
                    client = socket.socket(fileno=got[0])
                except BaseException:
                    os.close(got[0])
                    raise
                addr = got[1]
            else:
                client, addr = self.sock.accept()
        except OSError as e:
            if e.errno in _RETRY_ERRNOS:
                return None
            raise
        # An accepted socket inherits the listener's SO_RCVTIMEO; a request
        # is read without one, as gunicorn's sync worker reads it.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_TIMEOUT)
        return self.listener, client, addr

    def close(self):
        pass


class _MutexEngine:
    """The holder of a cross-process mutex waits for the listeners."""

    def __init__(self, listeners, wait, wakeup_fd=None, stopping=None, **_):
        self.wait = wait
        # a wait for the mutex can be long; a worker asked to stop while it
        # waited must not then also wait for a connection
        self.stopping = stopping or (lambda: False)
        for l in listeners:
            l.setblocking(False)
            defer_accept(_raw(l))
        self.waiter = _Waiter(listeners, wakeup_fd)

    def _serve_while_held(self):
        if self.stopping():
            return None
        for listener in self.waiter.ready(self.wait):
            conn = _accept_from(listener)
            if conn is not None:
                return conn
        return None

    def close(self):
        self.waiter.close()


class SemEngine(_MutexEngine):
    name = "sem"

    def __init__(self, listeners, wait, **kw):
        if Shared.semaphore is None:
            raise AcceptConfigError("%s=sem: no semaphore (the compiled extension is "
                                    "missing or the master made none)" % ENV)
        super().__init__(listeners, wait, **kw)
        self.sem = Shared.semaphore

    def accept(self):
        if not self.sem.acquire(self.wait):
            return None
        try:
            return self._serve_while_held()
        finally:
            self.sem.release()


class FcntlEngine(_MutexEngine):
    name = "fcntl"

    def __init__(self, listeners, wait, notify=None, **kw):
        if Shared.lock_path is None:
            raise AcceptConfigError("%s=fcntl: the master made no lock file" % ENV)
        super().__init__(listeners, wait, **kw)
        self.fd = os.open(Shared.lock_path, os.O_RDWR | os.O_CLOEXEC)
        self.lock = _sys.FileLock(self.fd) if _sys is not None else None
        # A wait for an fcntl lock has no time limit; while the main thread
        # sleeps on it this thread beats the heartbeat for it, and only then.
        self._waiting = threading.Event()
        self._closed = False
        self._notify = notify
        self._beater = threading.Thread(target=self._beat, name="accept-lock-heartbeat",
                                        daemon=True)
        self._beater.start()

    def _beat(self):
        while True:
            self._waiting.wait()
            if self._closed:
                return
            if self._notify is not None:
                self._notify()
            time.sleep(self.wait)

    def _acquire(self):
        if self.lock is not None:
            return self.lock.acquire(True)
        import fcntl
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX)
        except InterruptedError:
            return False
        return True

    def _release(self):
        if self.lock is not None:
            self.lock.release()
        else:
            import fcntl
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def accept(self):
        self._waiting.set()
        try:
            got = self._acquire()
        finally:
            self._waiting.clear()
        if not got:
            return None
        try:
            return self._serve_while_held()
        finally:
            self._release()

    def close(self):
        self._closed = True
        self._waiting.set()
        super().close()
        try:
            os.close(self.fd)
        except OSError:
            pass


class EpollEngine:
    name = "epoll"

    def __init__(self, listeners, wait, rotate=16, **_):
        self.wait = wait
        self.rotate = rotate
        self.accepted = 0
        self.listeners = listeners
        self.by_fd = {l.fileno(): l for l in listeners}
        for l in listeners:
            l.setblocking(False)
            defer_accept(_raw(l))
        self.poller = _sys.Epoll() if _sys is not None else select.epoll()
        self._register()

    def _register(self):
        for fd in self.by_fd:
            if _sys is not None:
                self.poller.register(fd, True)
            else:
                self.poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def _rotate(self):
        # EPOLL_CTL_DEL + ADD puts this worker at the back of the line of
        # exclusive waiters, so the next connections go to the others.
        for fd in self.by_fd:
            self.poller.unregister(fd)
        self._register()

    def accept(self):
        if _sys is not None:
            fds = self.poller.wait(self.wait)
        else:
            try:
                fds = [fd for fd, _ in self.poller.poll(self.wait)]
            except InterruptedError:
                fds = []
        for fd in fds:
            conn = _accept_from(self.by_fd[fd])
            if conn is not None:
                self.accepted += 1
                if self.accepted % self.rotate == 0:
                    self._rotate()
                return conn
        return None

    def close(self):
        self.poller.close()


class NoneEngine:
    """Stock gunicorn's way: every idle worker waits in select()."""
    name = "none"

    def __init__(self, listeners, wait, wakeup_fd=None, **_):
        self.wait = wait
        self.listeners = listeners
        for l in listeners:
            l.setblocking(False)
        self.fds = list(listeners) + ([wakeup_fd] if wakeup_fd is not None else [])
        self.wakeup_fd = wakeup_fd

    def accept(self):
        try:
            ready = select.select(self.fds, [], [], self.wait)[0]
        except InterruptedError:
            return None
        for listener in ready:
            if listener == self.wakeup_fd:
                try:
                    os.read(self.wakeup_fd, 1)
                except OSError:
                    pass
                continue
            conn = _accept_from(listener)
            if conn is not None:
                return conn
        return None

    def close(self):
        pass


_ENGINE_CLASSES = {c.name: c for c in (QueueEngine, SemEngine, FcntlEngine, EpollEngine, NoneEngine)}


def resolve(name, listeners, auto):
    """The engine a worker uses: ``auto`` is the worker class's choice,
    given its listeners; ``sem`` without the compiled extension is fcntl."""
    if name == "auto":
        name = auto(listeners)
    if name == "sem" and _sys is None:
        name = "fcntl"
    if name == "queue" and len(listeners) != 1:
        raise AcceptConfigError("%s=queue needs exactly one listener (there are %d); "
                                "use sem, fcntl or epoll" % (ENV, len(listeners)))
    return name


def check_boot(name):
    """Refuse, in a booting worker, an engine that could not run: what the
    master should have made is missing, or the rotation setting is bad."""
    if (name == "sem" and Shared.semaphore is None) or (name == "fcntl" and Shared.lock_path is None):
        raise AcceptConfigError("%s=%s: the master made no %s; set the variable in gunicorn's "
                                "own environment" % (ENV, name, "semaphore" if name == "sem"
                                                     else "lock file"))
    rotate_from_env()


def make_engine(name, listeners, wait, notify, wakeup_fd, stopping=None):
    return _ENGINE_CLASSES[name](listeners, wait, notify=notify, wakeup_fd=wakeup_fd,
                                 rotate=rotate_from_env(), stopping=stopping)


def close_if_drained(client):
    """Close a connection at once if the client has nothing more in flight.

    gunicorn's close_graceful() half-closes and then waits for the client to
    close, so that unread request bytes never turn the close into a reset.
    When the request was read to its end and nothing more has arrived, a
    plain close() already ends with FIN, and the worker need not wait for the
    client. Returns False (and closes nothing) otherwise.
    """
    try:
        pending = client.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
    except BlockingIOError:
        pending = None
    except OSError:
        return False
    if pending:
        return False
    client.close()
    return True
