"""Who accepts the next connection: herd-free waiting for the sync worker.

With one listener, an idle worker sleeps inside a blocking ``accept()``: the
kernel queues such sleepers in arrival order and wakes only the first of them
for a new connection, so exactly one idle worker wakes and the idle workers
take turns. ``SO_RCVTIMEO`` bounds each sleep so the worker can beat its
heartbeat and notice a stop request.

With several listeners no single blocking call can wait on all of them, so an
``fcntl`` record lock on a file shared by the workers of one master serialises
the wait: only the holder sleeps in ``select()`` on the listeners, and it lets
the lock go as soon as it has a connection.
"""
import atexit
import errno
import fcntl
import os
import select
import socket
import struct
import tempfile
import threading
import time

# Longest sleep in accept() or select(): how soon an idle worker notices a
# stop request, and its heartbeat period when the timeout allows it.
MAX_IDLE_WAIT = 1.0

_RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR)


def idle_wait(timeout):
    """Seconds an idle worker may sleep and still beat within ``timeout``."""
    if not timeout:
        return MAX_IDLE_WAIT
    return max(0.05, min(MAX_IDLE_WAIT, timeout / 2.0))


def _timeval(seconds):
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))


def set_recv_timeout(sock, seconds):
    """Set SO_RCVTIMEO, which bounds a blocking accept() or recv()."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


_NO_TIMEOUT = _timeval(0)


def defer_accept(sock):
    """Wake the accepting worker when the request's first bytes arrive, not
    at the end of the TCP handshake: it then reads at once instead of going
    back to sleep in recv(), one wake-up per connection instead of two."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_DEFER_ACCEPT"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
        except OSError:
            pass


class BlockingAccept:
    """One listener: sleep in accept(), the kernel wakes one sleeper."""

    def __init__(self, listener, wait):
        self.listener = listener
        # gunicorn's listener objects wrap the real socket
        self.sock = getattr(listener, "sock", listener)
        self.sock.setblocking(True)
        set_recv_timeout(self.sock, wait)
        defer_accept(self.sock)

    def accept(self):
        """(listener, client, addr), or None when the wait timed out."""
        try:
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


class LockedAccept:
    """Several listeners: an fcntl lock lets one idle worker wait at a time."""

    def __init__(self, listeners, wait, lock_path, notify, wakeup_fd):
        self.listeners = listeners
        self.wait = wait
        self.wakeup_fd = wakeup_fd
        for sock in listeners:
            sock.setblocking(False)
        self.lock_fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        # While the main thread sleeps on the lock it cannot beat the
        # heartbeat; this thread does it for it, and only then.
        self._waiting = threading.Event()
        self._closed = False
        self._notify = notify
        self._beater = threading.Thread(target=self._beat, name="accept-lock-heartbeat",
                                        daemon=True)
        self._beater.start()

    def _beat(self):
        while not self._closed:
            self._waiting.wait()
            if self._closed:
                return
            self._notify()
            time.sleep(self.wait)

    def accept(self):
        self._waiting.set()
        try:
            fcntl.lockf(self.lock_fd, fcntl.LOCK_EX)
        finally:
            self._waiting.clear()
        try:
            ready = select.select(self.listeners + [self.wakeup_fd], [], [], self.wait)[0]
            for listener in ready:
                if listener == self.wakeup_fd:
                    try:
                        os.read(self.wakeup_fd, 1)
                    except OSError:
                        pass
                    continue
                try:
                    client, addr = listener.accept()
                except OSError as e:
                    if e.errno in _RETRY_ERRNOS:
                        continue
                    raise
                client.setblocking(True)
                return listener, client, addr
            return None
        finally:
            fcntl.lockf(self.lock_fd, fcntl.LOCK_UN)

    def close(self):
        self._closed = True
        self._waiting.set()
        try:
            os.close(self.lock_fd)
        except OSError:
            pass


class LockFile:
    """The lock file of one gunicorn master, shared by all of its workers.

    Made once in the master (``setup()`` may run many times: at start, on
    every HUP), inherited by the workers through fork, removed when the
    master exits and never when a worker does.
    """
    path = None
    owner = None

    @classmethod
    def ensure(cls):
        if cls.path is not None:
            return cls.path
        fd, path = tempfile.mkstemp(prefix="turboworkers-accept-%d-" % os.getpid(),
                                    suffix=".lock")
        os.close(fd)
        cls.path = path
        cls.owner = os.getpid()
        atexit.register(cls._remove)
        return path

    @classmethod
    def _remove(cls):
        # atexit handlers registered in the master also run in forked
        # workers that exit through sys.exit: only the master removes.
        if cls.path and os.getpid() == cls.owner:
            try:
                os.unlink(cls.path)
            except OSError:
                pass


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
