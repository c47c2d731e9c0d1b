"""EpollThreadWorker: gunicorn's gthread worker without a hand-off queue.

``--threads`` threads wait on one epoll instance per process
(leader/followers): there is no poller thread passing connections to a pool.
A client connection is registered ``EPOLLONESHOT``, so exactly one thread
serves it at a time; the thread re-arms it once it has answered, and any
idle thread picks up the next ready connection. The listeners are in the same
epoll with ``EPOLLEXCLUSIVE``, so a new connection wakes one process, and
they are registered again every ``TURBOWORKERS_EPOLL_ROTATE`` accepts so the
kernel's wake-up order rotates between processes.

Of the idle threads only one waits in epoll_wait; the others are parked. The
thread that took an event serves it, and then whatever is ready next, without
letting the GIL go. A watcher (a C thread that never takes the GIL) sends a
parked thread to wait for events only when the serving threads are blocked
in the application, and parks a serving thread again when several take turns
at a busy GIL: each turn costs a waiting connection up to the interpreter's
switch interval (see ``_poll.Poller``).

A head is read without blocking (``MSG_DONTWAIT``) and fed to the push-mode
parser: a client that trickles its request in never holds a thread; its
connection is re-armed until the head is complete. A request body is read
from the socket by the serving thread, blocking, as gthread reads it.

The main thread is a light timer: it beats the heartbeat when no serving
thread did lately (every thread may be inside the application), closes
kept-alive connections whose time is up and runs the graceful stop.
"""
import errno
import os
import select
import socket
import ssl
import sys
import threading
import time
from datetime import datetime
from itertools import count

from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http import wsgi
from gunicorn.workers import base

from turboworkers import accept as _accept
from turboworkers import glue

try:
    # epoll and non-blocking reads that keep the GIL (see cext/.../_poll.pyx)
    from turboworkers._poll import Poller as _Poller, recv_nowait as _recv_nowait
    # a lock that does not hand the GIL over at each acquisition (see _poll.Lock)
    from turboworkers._poll import Lock as _Lock
except ImportError:  # no compiled extension: the standard library's
    _Poller = _recv_nowait = None
    _Lock = threading.Lock


class _StdPoller:
    """``_poll.Poller`` on select.epoll, where the extension is missing."""

    def __init__(self):
        self._ep = select.epoll()
        self.register = self._ep.register
        self.modify = self._ep.modify
        self.unregister = self._ep.unregister
        self.close = self._ep.close

    def poll_one(self, timeout):
        try:
            events = self._ep.poll(timeout, 1)
        except InterruptedError:
            return -1
        return events[0][0] if events else -1

_EPOLLIN = select.EPOLLIN
_ONESHOT = select.EPOLLONESHOT
_EXCLUSIVE = select.EPOLLEXCLUSIVE
_ET = select.EPOLLET
_ARM = _EPOLLIN | _ONESHOT
_DONTWAIT = socket.MSG_DONTWAIT

# bytes taken from the kernel per non-blocking read of a head
_RECV_SIZE = 65536
# pure mode: a head not complete within this many bytes is handed to
# gunicorn's parser anyway, which reads the rest (and applies its limits)
_PURE_HEAD_MAX = 65536
# a stopping worker keeps its kept-alive connections this long at most, for
# a request a client may already be sending (answered with Connection: close)
_STOP_LINGER = 2.0
# closing after a response while the client still sends: wait this long, and
# for this many bytes at most, for the client's FIN (RFC 9112 9.6)
_CLOSE_LINGER = 2.0
_CLOSE_DRAIN_MAX = 65536
# gthread bounds the drain of an unread body between two requests (time,
# bytes) and closes the connection past either bound
_DRAIN_TIMEOUT = 5.0
_DRAIN_MAX_BYTES = 65536

# how often the watcher of the thread pool looks whether a parked thread
# should wait for events (the serving threads are blocked in the
# application) or a serving one park (they queue for a busy GIL)
_PARK_TICK = 0.002

# A process that left the rotation of exclusive waiters comes back no
# sooner than this: the other processes woken for a burst of connections
# must get the CPU and take their share before its ADD, which reports the
# listener to it alone, lets it take another batch.
_REJOIN_DELAY = 0.005

# connections one wake-up of a listener may accept
_ACCEPT_BATCH = 16
# after an accept error other than "nothing there" (EMFILE, ENOBUFS...)
_ACCEPT_ERROR_PAUSE = 0.1

_IDLE, _BUSY, _CLOSED = 0, 1, 2
_QUIET_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
_RETRY_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR)


class _Conn:
    """One client connection; ``state`` is changed under the worker's lock."""

    __slots__ = ("sock", "fd", "addr", "listener", "server", "parser", "state",
                 "deadline", "registered", "closing", "drained", "pending", "eof",
                 "source", "tls", "handshake")

    def __init__(self, sock, addr, listener, server):
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.listener = listener
        self.server = server
        self.parser = None
        self.state = _BUSY
        self.deadline = 0.0
        self.registered = False
        self.closing = False      # the response is out; waiting for the client's FIN
        self.drained = 0
        self.pending = None       # pure mode: head bytes not yet handed to gunicorn
        self.eof = False
        self.source = None
        self.tls = False          # an SSLSocket: no recv flags, decrypted bytes may wait in it
        self.handshake = False    # TLS: the handshake is still to be done


class _Source:
    """Pure mode: what gunicorn's parser reads from. The bytes this worker
    already took from the socket come first, then the socket itself."""

    __slots__ = ("sock", "buf", "eof")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def feed(self, data):
        self.buf = self.buf + data if self.buf else data

    def recv(self, size):
        buf = self.buf
        if buf:
            if len(buf) <= size:
                self.buf = b""
                return buf
            self.buf = buf[size:]
            return buf[:size]
        if self.eof:
            return b""
        return self.sock.recv(size)

    def take(self):
        buf, self.buf = self.buf, b""
        return buf

    def gettimeout(self):
        return self.sock.gettimeout()

    def settimeout(self, value):
        self.sock.settimeout(value)


def _head_complete(data):
    return b"\r\n\r\n" in data or len(data) > _PURE_HEAD_MAX


class EpollThreadWorker(base.Worker):
    """Drop-in for ``-k gthread``: ``gunicorn -k turboworkers.EpollThreadWorker --threads 8 app:app``."""

    # TURBOWORKERS_ACCEPT values this worker understands: the listeners are
    # in every thread's epoll, exclusive ("epoll", the default) or not ("none")
    ACCEPT_ENGINES = ("auto", "epoll", "none")

    @classmethod
    def setup(cls):
        engine = glue.accept_engine_at_setup(cls.__name__)
        if engine not in cls.ACCEPT_ENGINES:
            raise glue.ConfigError(cls.__name__, "%s=%s: this worker waits for connections "
                                   "in its threads' epoll; use auto, epoll or none"
                                   % (_accept.ENV, engine))

    @classmethod
    def check_config(cls, cfg, log):
        if cfg.worker_connections - cfg.threads <= 0 and cfg.keepalive:
            log.warning("No keepalived connections can be handled. "
                        "Check the number of worker connections and threads.")

    def init_process(self):
        name = self.__class__.__name__
        glue.check_settings_at_boot(self.cfg, name)
        try:
            engine = _accept.engine_from_env()
            _accept.rotate_from_env()
        except _accept.AcceptConfigError as e:
            glue._refuse(glue.ConfigError(name, str(e)))
        if engine not in self.ACCEPT_ENGINES:
            glue._refuse(glue.ConfigError(name, "%s=%s: use auto, epoll or none"
                                          % (_accept.ENV, engine)))
        self._exclusive = engine != "none"
        super().init_process()

    # -- signals ------------------------------------------------------------

    def handle_exit(self, sig, frame):
        self.alive = False

    def handle_usr1(self, sig, frame):
        super().handle_usr1(sig, frame)
        http_core = getattr(self, "http", None)
        if http_core is not None:
            http_core.logs_reopened()

    def is_parent_alive(self):
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def _wake_main(self):
        try:
            os.write(self.PIPE[1], b".")
        except OSError:
            pass

    # -- set-up -------------------------------------------------------------

    def run(self):
        cfg = self.cfg
        self.http = glue.HttpCore(cfg, self.log, multithread=True)
        self._accelerated = self.http.accelerated
        self._ssl_context = gsock.ssl_context(cfg) if cfg.is_ssl else None
        if 'h2' in cfg.http_protocols:
            self.log.warning("HTTP/2 is not supported by %s; serving HTTP/1.1 only.",
                             self.__class__.__name__)
        self._pre_request = cfg.pre_request
        self._post_request = cfg.post_request
        self._access_log = glue.access_log_wanted(self.log)
        self._keepalive = cfg.keepalive
        self._keepalive_on = bool(cfg.keepalive)
        # a client in the middle of its head gets this long between pieces
        self._request_wait = max(float(cfg.keepalive), float(cfg.timeout or 30))
        self._max_conns = max(1, cfg.worker_connections)
        self._max_keepalived = cfg.worker_connections - cfg.threads
        self._pure_heads = getattr(cfg, "protocol", "http") != "uwsgi" and \
            getattr(cfg, "proxy_protocol", "off") in ("off", None, False)
        self._rotate = _accept.rotate_from_env()
        self._wait = _accept.idle_wait(self.timeout)
        self._beat = _accept.Heartbeat(self.notify, self._wait)
        self._counter = count(1)

        self._lock = _Lock()
        self._conns = {}
        self._nconns = 0
        self._busy = 0
        self._shedding = False
        self._capped = False
        self._rejoin = False
        self._left_at = 0.0
        self._lazy_rejoin = self._exclusive and cfg.workers > 1
        self._accepted = 0
        self._accepting = False
        self._exiting = False
        self._stopping = False
        self._sealed = False

        self._ep = _Poller() if _Poller is not None else _StdPoller()
        nthreads = max(1, cfg.threads)
        if nthreads > 1 and hasattr(self._ep, "park"):
            # one idle thread waits in epoll_wait, the others are parked until
            # the serving threads stop coming back for events (see _poll.Poller)
            self._ep.park(_PARK_TICK, nthreads)
        self._listeners = {}
        self._names = {}
        for listener in self.sockets:
            raw = getattr(listener, "sock", listener)
            raw.setblocking(False)
            _accept.defer_accept(raw)
            self._listeners[raw.fileno()] = raw
            self._names[raw.fileno()] = raw.getsockname()
        with self._lock:
            self._set_accepting(True)

        # Load shedding: a process with more than 7/8 of its threads busy
        # leaves the exclusive rotation until it drops below, so the next
        # connections go to workers with threads to spare. Only when there
        # are other workers to take them, and not for "none" (stock-like).
        self._shed_above = nthreads * 7 // 8 \
            if self._exclusive and cfg.workers > 1 else None
        self.log.debug("turboworkers: %d threads on one epoll, listeners %s", nthreads,
                       "exclusive" if self._exclusive else "shared")
        self._threads = []
        for i in range(nthreads):
            t = threading.Thread(target=self._thread_main, name="turbo-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        try:
            self._timer()
            self._graceful_stop()
        finally:
            self._exiting = True

    # -- the listeners (called with the lock held) ---------------------------

    def _listener_mask(self):
        # Edge-triggered: a level-triggered listener stays on the epoll's
        # ready list after it is reported, and the kernel then wakes a second
        # thread of this process for the same connection (which finds nothing
        # to accept), and that one a third. With EPOLLET one connection wakes
        # one thread; the price is that the backlog must be drained to
        # EAGAIN, or the listener registered again (see _accept_more).
        return _EPOLLIN | _EXCLUSIVE | _ET if self._exclusive else _EPOLLIN

    def _set_accepting(self, on):
        if on:
            self._rejoin = False
        if on == self._accepting:
            return
        for fd in self._listeners:
            if on:
                self._ep.register(fd, self._listener_mask())
            else:
                try:
                    self._ep.unregister(fd)
                except OSError:
                    pass
        self._accepting = on

    def _rotate_listeners(self):
        # EPOLL_CTL_DEL + ADD puts this process at the back of the line of
        # exclusive waiters, so the next connections wake the others first.
        # An ADD of a listener with connections waiting reports it at once,
        # but only to this process (the others were not woken for those
        # connections): were the ADD made now, this process's threads would
        # drain a whole burst of connections. So with other workers the ADD
        # waits until a thread of this process has nothing else to do (or a
        # connection ends); meanwhile new connections wake the others, and
        # take from the backlog in the order it came.
        if self._accepting:
            self._set_accepting(False)
            if self._lazy_rejoin:
                self._rejoin = True
                self._left_at = time.monotonic()
            else:
                self._set_accepting(True)

    def _rejoin_rotation(self):
        """Back in the rotation, unless this process left it less than
        _REJOIN_DELAY ago: then the seconds still to wait."""
        with self._lock:
            if self._rejoin:
                left = self._left_at + _REJOIN_DELAY - time.monotonic()
                if left > 0:
                    return left
                self._rejoin = False
                self._resume_accepting()
        return 0.0

    # -- the main thread: a light timer --------------------------------------

    def _sleep(self, seconds):
        try:
            ready = select.select([self.PIPE[0]], [], [], seconds)[0]
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self.PIPE[0], 4096):
                    pass
            except OSError:
                pass

    def _timer(self):
        tick = min(self._wait, 1.0)
        while self.alive:
            self._beat()
            self._expire(time.monotonic())
            if not self.is_parent_alive():
                self.alive = False
                return
            self._sleep(tick)

    def _expire(self, now, force=False):
        """Close the waiting connections whose time is up."""
        doomed = []
        with self._lock:
            for conn in list(self._conns.values()):
                if conn.state == _IDLE and (force or conn.deadline <= now):
                    self._forget(conn)
                    doomed.append(conn)
        for conn in doomed:
            try:
                conn.sock.close()
            except OSError:
                pass

    def _graceful_stop(self):
        """Stop accepting, finish what is in flight, exit within graceful_timeout."""
        self._stopping = True
        end = time.monotonic() + self.cfg.graceful_timeout
        with self._lock:
            self._set_accepting(False)
        # connections already in the backlog were made to this server: serve
        # them (with Connection: close) instead of resetting them
        for raw in self._listeners.values():
            for _ in range(self._max_conns):
                conn = self._accept(raw)
                if conn is None:
                    break
                self._rearm(conn, _STOP_LINGER)
        linger = time.monotonic() + min(_STOP_LINGER, self.cfg.graceful_timeout)
        with self._lock:
            for conn in self._conns.values():
                if conn.state == _IDLE and not self._has_partial(conn):
                    conn.deadline = min(conn.deadline, linger)
        while True:
            with self._lock:
                if self._nconns == 0:
                    self._sealed = True
                    break
            now = time.monotonic()
            if now >= end:
                with self._lock:
                    self._sealed = True
                break
            self._beat()
            self._expire(now)
            if not self.is_parent_alive():
                break
            self._sleep(min(0.1, end - now))
        self._expire(0, force=True)
        for listener in self.sockets:
            try:
                listener.close()
            except OSError:
                pass

    def _has_partial(self, conn):
        if conn.parser is not None:
            return not conn.parser.at_rest() if self._accelerated else False
        return bool(conn.pending)

    # -- connections ----------------------------------------------------------

    def _accept(self, raw):
        # The accept and the count are one step under the lock: a stopping
        # worker that found no connection left seals itself, and a thread
        # that still held a listener's event accepts nothing after that
        # (the connection stays in the shared backlog for another process,
        # instead of being reset when this one exits).
        with self._lock:
            if self._sealed:
                return None
            if not self._accepting and not self._stopping:
                # Out of the rotation (or shedding, or at worker_connections)
                # since this thread was woken: the connection is left to the
                # workers in line. Without this, every thread of this process
                # woken before the rotation would still take one.
                return None
            try:
                sock, addr = raw.accept()
            except OSError as e:
                if e.errno in _RETRY_ERRNOS:
                    return None
                raise
            conn = _Conn(sock, addr, raw, self._names[raw.fileno()])
            self._conns[conn.fd] = conn
            self._nconns += 1
            self._one_more_busy()
            self._accepted += 1
            if self._nconns >= self._max_conns and not self._capped:
                self._capped = True
                self._set_accepting(False)
                self.log.debug("turboworkers: %d connections open (worker_connections), "
                               "accepting paused", self._nconns)
            elif self._accepting and self._accepted % self._rotate == 0:
                # (never while stopping: it would register the listeners again)
                self._rotate_listeners()
        sock.setblocking(True)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self._ssl_context is not None:
            conn.handshake = True
        elif self._accelerated:
            conn.parser = self.http.parser(sock, addr, conn.server)
        else:
            conn.pending = b""
        return conn

    def _accept_more(self, raw):
        # One thread serves the connection it accepted; the others waiting
        # in the backlog are taken now and armed, so that any idle thread
        # can serve them, in turn with the connections already open. Taking
        # only one per wake-up would leave new clients behind every ready
        # keep-alive connection while all threads are busy.
        for _ in range(_ACCEPT_BATCH - 1):
            if not self._accepting:
                return
            conn = self._accept(raw)
            if conn is None:
                return
            self._rearm(conn, self._request_wait)
        # The batch is full and the backlog may not be empty: an
        # edge-triggered listener would not be reported again until the next
        # connection arrives. Registering it again reports it at once if it
        # is still ready (and sends this process to the back of the line).
        with self._lock:
            self._rotate_listeners()

    def _claim(self, fd):
        # An event can be stale: its connection was closed meanwhile and the
        # fd number given to a new one. The new connection is then busy (the
        # event is dropped) or armed, and the thread finds nothing to read
        # and re-arms it: a spurious wake-up, never a connection served twice.
        with self._lock:
            conn = self._conns.get(fd)
            if conn is None or conn.state != _IDLE:
                return None
            conn.state = _BUSY
            self._one_more_busy()
        return conn

    def _rearm(self, conn, wait):
        conn.deadline = time.monotonic() + wait
        with self._lock:
            if conn.state != _BUSY:
                return
            conn.state = _IDLE
            self._one_less_busy()
            if conn.registered:
                self._ep.modify(conn.fd, _ARM)
            else:
                conn.registered = True
                self._ep.register(conn.fd, _ARM)

    def _forget(self, conn):
        # with the lock held: the connection leaves the books (its socket is
        # closed by the caller, after this)
        if conn.state == _CLOSED:
            return False
        if conn.state == _BUSY:
            self._one_less_busy()
        conn.state = _CLOSED
        self._conns.pop(conn.fd, None)
        self._nconns -= 1
        if conn.parser is not None and self._accelerated:
            # its last Request and Body refer back to it: without this, a
            # connection ended by the keep-alive bound or a socket error
            # would wait for the cyclic collector
            conn.parser.close()
        self._resume_accepting()
        return True

    def _resume_accepting(self):
        # with the lock held
        if self._capped and self._nconns < self._max_conns:
            self._capped = False
            self.log.debug("turboworkers: accepting resumed")
        if not self._accepting and self.alive and not self._stopping \
                and not self._shedding and not self._capped:
            self._set_accepting(True)

    def _one_more_busy(self):
        # with the lock held
        self._busy += 1
        if self._shed_above is not None and self._busy > self._shed_above \
                and not self._shedding:
            self._shedding = True
            self._set_accepting(False)

    def _one_less_busy(self):
        # with the lock held
        self._busy -= 1
        if self._shedding and self._busy <= self._shed_above:
            self._shedding = False
            self._resume_accepting()

    def _close(self, conn):
        with self._lock:
            if not self._forget(conn):
                return
        try:
            conn.sock.close()
        except OSError:
            pass

    def _close_after_response(self, conn):
        """Close at once when the client has nothing more in flight; otherwise
        send FIN and wait (without a thread) for the client's, as gunicorn's
        close_graceful does, so unread bytes never turn the close into a reset."""
        sock = conn.sock
        try:
            # the kernel's buffer, below TLS if any
            pending = socket.socket.recv(sock, 1, _DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            pending = b""
        except OSError:
            pending = b""
        if not pending:
            self._close(conn)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.closing = True
        conn.drained = 0
        self._rearm(conn, _CLOSE_LINGER)

    def _linger(self, conn):
        sock = conn.sock
        while conn.drained < _CLOSE_DRAIN_MAX:
            try:
                data = socket.socket.recv(sock, _RECV_SIZE, _DONTWAIT)
            except BlockingIOError:
                self._rearm(conn, max(0.0, conn.deadline - time.monotonic()))
                return
            except OSError:
                break
            if not data:
                break
            conn.drained += len(data)
        self._close(conn)

    # -- the serving threads --------------------------------------------------

    def _thread_main(self):
        poll_one = self._ep.poll_one
        listeners = self._listeners
        beat = self._beat
        wait = self._wait
        log = self.log
        while not self._exiting:
            try:
                if self._rejoin:
                    fd = poll_one(0)
                    if fd < 0:
                        left = self._rejoin_rotation()
                        fd = poll_one(min(left, wait) if left > 0 else wait)
                else:
                    fd = poll_one(wait)
            except OSError:
                if self._exiting:
                    return
                raise
            beat()
            if fd < 0 or self._exiting:
                continue
            raw = listeners.get(fd)
            try:
                if raw is not None:
                    conn = self._accept(raw)
                    if conn is not None:
                        self._accept_more(raw)
                else:
                    conn = self._claim(fd)
            except Exception:
                log.exception("Error accepting a connection")
                if raw is not None:
                    # EMFILE, ENOBUFS...: the connection is still in the
                    # backlog. Try again after a pause; registering the
                    # edge-triggered listener again reports it if it is
                    # still there.
                    time.sleep(_ACCEPT_ERROR_PAUSE)
                    with self._lock:
                        self._rotate_listeners()
                continue
            if conn is None:
                continue
            self._serve_event(conn)
            # an idle thread must not keep the last connection it served
            # (its socket and buffers) alive until its next event
            conn = None

    def _serve_event(self, conn):
        try:
            if conn.handshake and not self._start_tls(conn):
                return
            if conn.closing:
                self._linger(conn)
            elif self._accelerated:
                self._serve(conn)
            else:
                self._serve_pure(conn)
        except BaseException:
            self.log.exception("Error serving a connection")
            self._close(conn)

    def _start_tls(self, conn):
        """TLS handshake, in the serving thread and blocking (bounded by the
        time a request head may take), as gthread does it; False when the
        connection was closed."""
        sock = conn.sock
        try:
            sock.settimeout(self._request_wait)
            tls = self._ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            conn.sock = tls
            tls.do_handshake()
            tls.settimeout(None)
        except (OSError, ValueError) as e:
            self.log.debug("TLS handshake failed: %s", e)
            self._close(conn)
            return False
        conn.tls = True
        conn.handshake = False
        if self._accelerated:
            conn.parser = self.http.parser(tls, conn.addr, conn.server)
        else:
            conn.pending = b""
        return True

    def _recv(self, conn):
        """What the client sent since the last read: bytes, b"" at EOF, None
        if nothing (a spurious wake-up), False if the socket failed."""
        sock = conn.sock
        try:
            if not conn.tls:
                if _recv_nowait is not None:
                    return _recv_nowait(conn.fd, _RECV_SIZE)
                return sock.recv(_RECV_SIZE, _DONTWAIT)
            sock.settimeout(0.0)
            try:
                return sock.recv(_RECV_SIZE)
            finally:
                sock.settimeout(None)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError as e:
            if e.errno not in _QUIET_ERRNOS:
                self.log.debug("Socket error reading a request: %s", e)
            return False

    @staticmethod
    def _more_in_tls(conn):
        # decrypted bytes waiting in the SSL object make no epoll event
        return conn.tls and conn.sock.pending() > 0

    def _serve(self, conn):
        """Accelerated: feed what arrived to the push-mode parser, answer every
        request complete in the buffer, re-arm or close."""
        parser = conn.parser
        data = self._recv(conn)
        if data is False:
            self._close(conn)
            return
        if data is None:
            self._rearm(conn, self._wait_for(conn))
            return
        if not data:
            parser.feed_eof()
            data = None
        sock = conn.sock
        req = None
        try:
            while True:
                # what was received is fed by the first parse
                environ = parser.parse(data)
                data = None
                if environ is None:
                    if self._more_in_tls(conn):
                        data = self._recv(conn)
                        if data:
                            continue
                        if data is False:
                            break
                    self._rearm(conn, self._wait_for(conn))
                    return
                if environ is _STOP:
                    break
                req = parser.req
                keep = self._handle_environ(conn, req, environ)
                if not keep:
                    parser.close()
                    self._close_after_response(conn)
                    return
                if not parser.at_rest() and not self._drain_body(conn, parser):
                    break
                if not parser.finish_body():
                    break
                req = None
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except ssl.SSLError as e:
            if e.args[0] == ssl.SSL_ERROR_EOF:
                self.log.debug("ssl connection closed")
            else:
                self.log.debug("Error processing SSL request.")
                self.handle_error(req, sock, conn.addr, e)
        except OSError as e:
            self._log_oserror(e)
        except BaseException as e:
            self.handle_error(req, sock, conn.addr, e)
        parser.close()
        self._close_after_response(conn)

    def _drain_body(self, conn, parser):
        """Skip what the application left unread of the request body, as
        gthread does before it keeps a connection: at most _DRAIN_MAX_BYTES
        within _DRAIN_TIMEOUT seconds, else the connection is closed."""
        body = parser.req.body
        sock = conn.sock
        end = time.monotonic() + _DRAIN_TIMEOUT
        drained = 0
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                sock.settimeout(left)
                data = body.read(1024)
                if not data:
                    return True
                drained += len(data)
                if drained >= _DRAIN_MAX_BYTES:
                    return False
        except OSError:
            return False
        finally:
            try:
                sock.settimeout(None)
            except OSError:
                pass

    def _wait_for(self, conn):
        if self._stopping and not self._has_partial(conn):
            return _STOP_LINGER
        if self._has_partial(conn):
            return self._request_wait
        return self._keepalive if self._keepalive_on else self._request_wait

    def _log_oserror(self, e):
        glue.log_socket_error(self.log, e, "Ignoring connection epipe")

    def _must_close(self):
        return (not self.alive or not self._keepalive_on
                or self._nconns - self._busy >= self._max_keepalived)

    def _count_request(self):
        if next(self._counter) >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            # Stop accepting now, in this thread: the main thread may wait
            # for the GIL a switch interval (5 ms) while this one serves,
            # and the listeners left armed that long let a worker take
            # requests far past max_requests.
            with self._lock:
                self._set_accepting(False)
            self._wake_main()
            return True
        return False

    def _handle_environ(self, conn, req, environ):
        """Call the app for one parsed request (accelerated mode); True to keep
        the connection for the next request."""
        resp = None
        sock = conn.sock
        try:
            self._pre_request(self, req)
            request_start = datetime.now() if self._access_log else None
            resp = self.http.response(sock, req)
            environ["wsgi.early_hints"] = resp.send_early_hints
            if self._count_request() or self._must_close():
                resp.force_close()
            glue.run_app(self, req, environ, resp, request_start)
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                self.log.exception("Error handling request")
                raise StopIteration()
            raise
        finally:
            try:
                self._post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True

    # -- pure mode: gunicorn's HTTP code --------------------------------------

    def _serve_pure(self, conn):
        while True:
            data = self._recv(conn)
            if data is False:
                self._close(conn)
                return
            if data is None:
                self._rearm(conn, self._wait_for(conn))
                return
            if not data:
                conn.eof = True
                if not conn.pending:
                    self._close(conn)
                    return
            else:
                conn.pending += data
            if self._pure_heads and not conn.eof and not _head_complete(conn.pending):
                if self._more_in_tls(conn):
                    continue
                self._rearm(conn, self._request_wait)
                return
            break
        if conn.source is None:
            conn.source = _Source(conn.sock)
            conn.parser = http.get_parser(self.cfg, conn.source, conn.addr)
        source = conn.source
        source.feed(conn.pending)
        source.eof = conn.eof
        conn.pending = b""
        parser = conn.parser
        req = None
        try:
            while True:
                req = next(parser)
                if not self._handle_pure(conn, req):
                    break
                if not parser.finish_body(deadline=time.monotonic() + _DRAIN_TIMEOUT):
                    break
                req = None
                left = parser.unreader.take_buffered() + source.take()
                if left and (conn.eof or not self._pure_heads or _head_complete(left)):
                    source.feed(left)
                    continue
                conn.pending = left
                if conn.eof:
                    break
                if self._more_in_tls(conn):
                    # the next request waits in the SSL object, not in the kernel
                    return self._serve_pure(conn)
                self._rearm(conn, self._wait_for(conn))
                return
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except ssl.SSLError as e:
            self.handle_error(req, conn.sock, conn.addr, e)
        except OSError as e:
            self._log_oserror(e)
        except Exception as e:
            self.handle_error(req, conn.sock, conn.addr, e)
        conn.pending = b""
        self._close_after_response(conn)

    def _handle_pure(self, conn, req):
        """gthread's handle_request, in the serving thread."""
        environ = {}
        resp = None
        try:
            self._pre_request(self, req)
            request_start = datetime.now()
            resp, environ = wsgi.create(req, conn.sock, conn.addr, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            if self._count_request() or self._must_close():
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ['wsgi.file_wrapper']):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp and resp.headers_sent:
                self.log.exception("Error handling request")
                raise StopIteration()
            raise
        finally:
            try:
                self._post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True


def _stop_marker():
    try:
        from turboworkers import _ext
        if _ext.http_parser is not None:
            return _ext.http_parser.STOP
    except Exception:
        pass
    return object()


_STOP = _stop_marker()
