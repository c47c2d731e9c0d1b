"""GeventMutexWorker: gunicorn's gevent worker, herd-free and on the Cython HTTP core.

gevent is set up by gunicorn's own ``GeventWorker`` (monkey-patching, the hub
made again after fork, signal handlers run in greenlets), which this class
extends. What it replaces:

- accepting: instead of every worker waking for every connection (stock
  ``StreamServer``), the holder of a cross-process mutex (``TURBOWORKERS_ACCEPT``,
  default ``sem``) waits for the listeners, accepts a small batch, lets the
  mutex go and gives each connection a greenlet of a pool of
  ``worker_connections``. A worker whose pool is more than 7/8 full sits out
  until it drains. With one worker there is no mutex;
- connections: requests are read by the Cython parser over the gevent socket
  (keep-alive and pipelining, each head within ``keepalive`` seconds as
  stock gevent times them) and answered by the Cython response writer. In
  pure mode, or for settings the parser leaves to gunicorn (and for HTTP/2),
  each connection goes to gunicorn's own ``AsyncWorker.handle``.

This module imports gevent: ``import turboworkers`` does not, and choosing
this worker without gevent installed stops start-up with one line.
"""
import collections
import errno
import os
import socket
import ssl
import sys
import time
from datetime import datetime

try:
    import gevent
except ImportError as _exc:
    raise RuntimeError("turboworkers.GeventMutexWorker needs gevent (pip install "
                       "'turboworkers[gevent]'): %s" % _exc) from None

import gevent.event
import gevent.pool
import gevent.socket
from gevent.hub import Waiter, get_hub

from gunicorn import http, util
from gunicorn.sock import ssl_context
from gunicorn.workers import base, base_async
from gunicorn.workers.base_async import ALREADY_HANDLED
from gunicorn.workers.ggevent import GeventWorker

from turboworkers import accept as _accept
from turboworkers import _ext
from turboworkers import glue

# Connections one wake-up of the accept thread takes at most.
ACCEPT_BATCH = 16
# Connections one turn at the mutex takes before the mutex goes to the next
# worker in line (over several wake-ups if they come one by one).
ACCEPTS_PER_TURN = 16
# A worker whose open connections exceed this share of worker_connections
# stops taking the mutex until it drops below it.
SHED_NUM, SHED_DEN = 7, 8
# While shedding: how often the worker looks at its pool again.
SHED_POLL = 0.005
# A batch of new connections the hub has not taken this long after it was
# handed over means the hub is stuck (in CPU-bound code, say): the turn at
# the mutex goes to the other workers.
STUCK_AFTER = 0.02
# After an accept error other than "nothing there" (EMFILE, ENOBUFS...).
ACCEPT_ERROR_PAUSE = 0.1
# epoll: a worker that left the line of exclusive waiters (every ``rotate``
# accepts) registers its listeners again no sooner than this. An ADD of a
# listener with connections still waiting reports it at once, and to this
# worker alone: re-registered at once, it would take the next batch of a
# burst too, and the next, while the workers woken for it find nothing. The
# wait lets them take their share first (as EpollThreadWorker's rejoin).
REJOIN_DELAY = 0.005
# The event loop's tick while requests are in flight (see _tick.pyx): libev
# waits in whole milliseconds, at least one, so without it a timer falls due
# up to 2 ms before the loop wakes. 0.1 ms bounds that, for up to 10,000 cheap
# wake-ups a second while the loop waits with requests in flight. With 500
# connections sleeping 10 ms each, 6 paired probes against a 0.2 ms tick gave
# from -6% to +11% requests per second (median +6%): within this machine's
# noise, but not worse.
TIMER_TICK = 0.0001

_ACCEPT_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR,
                 errno.EPROTO)


class _StopAccepting(Exception):
    """Thrown into the accepting greenlet when the worker stops."""


class _KeepaliveExpired(BaseException):
    """Thrown into a connection's greenlet when its next request head did
    not come within ``keepalive`` seconds (a BaseException, as
    gevent.Timeout is)."""


class _Acceptor:
    """Accepting from a greenlet, waiting for the listeners in the hub.

    Used with one worker (``solo``: no mutex), for ``none`` (every worker
    waits, as stock gunicorn), and where the compiled extension is missing
    (``fcntl`` and ``epoll`` from the standard library). There the mutex
    (or the exclusive epoll) is waited for in a thread of gevent's thread
    pool, never in the hub, which runs every connection of this worker; a
    ``try_acquire`` in the hub comes first, so a thread is only used when
    another worker holds the mutex. ``_ThreadAcceptor`` below is the faster
    way when the extension is there.
    """

    error = None

    def __init__(self, worker, engine, listeners, pool, wait, log):
        self.worker = worker
        self.engine = engine
        self.listeners = listeners
        self.pool = pool
        self.wait = wait
        self.log = log
        self.hub = get_hub()
        self.running = True
        self.in_mutex_wait = False
        connections = max(1, worker.worker_connections)
        self.batch = ACCEPT_BATCH
        # with a mutex: sit out above 7/8 full, so the other workers serve
        self.high = connections * SHED_NUM // SHED_DEN if engine != "solo" else connections
        self.watchers = [self.hub.loop.io(l.fileno(), 1) for l in listeners]
        for l in listeners:
            l.setblocking(False)
            if engine != "solo":
                _accept.defer_accept(l)
        self.sem = self.lock = self.lock_fd = self.poller = None
        self.by_fd = {l.fileno(): l for l in listeners}
        if engine == "sem":
            self.sem = _accept.Shared.semaphore
            if self.sem is None:
                raise _accept.AcceptConfigError("%s=sem: no semaphore (the compiled extension "
                                                "is missing or the master made none)"
                                                % _accept.ENV)
        elif engine == "fcntl":
            if _accept.Shared.lock_path is None:
                raise _accept.AcceptConfigError("%s=fcntl: the master made no lock file"
                                                % _accept.ENV)
            self.lock_fd = os.open(_accept.Shared.lock_path, os.O_RDWR | os.O_CLOEXEC)
            if _accept._sys is not None:
                self.lock = _accept._sys.FileLock(self.lock_fd)
        elif engine == "epoll":
            self.rotate = _accept.rotate_from_env()
            self.accepted = 0
            self.next_rotation = self.rotate
            if _accept._sys is not None:
                self.poller = _accept._sys.Epoll()
            else:
                # gevent's patched select module has no epoll
                from gevent.monkey import get_original
                self.poller = get_original("select", "epoll")()
            self._register()

    # -- the mutex ---------------------------------------------------------

    def _in_thread(self, func, *args):
        # the greenlet must not be killed while the thread may still take
        # the mutex: it would then never be given back (see stop())
        self.in_mutex_wait = True
        try:
            return self.hub.threadpool.apply(func, args)
        finally:
            self.in_mutex_wait = False

    def take(self):
        """Take the mutex; False when the wait ended without it."""
        if self.sem is not None:
            if self.sem.try_acquire():
                return True
            return self._in_thread(self.sem.acquire, self.wait)
        if self.engine == "fcntl":
            if self._lock_try():
                return True
            return self._in_thread(self._lock_wait)
        return True

    def give_back(self):
        if self.sem is not None:
            self.sem.release()
        elif self.engine == "fcntl":
            if self.lock is not None:
                self.lock.release()
            else:
                import fcntl
                fcntl.lockf(self.lock_fd, fcntl.LOCK_UN)

    def _lock_try(self):
        if self.lock is not None:
            return self.lock.acquire(False)
        import fcntl
        try:
            fcntl.lockf(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    def _lock_wait(self):
        # in the pool's thread: an fcntl wait has no time limit, but every
        # holder lets go within ``wait`` seconds
        if self.lock is not None:
            return self.lock.acquire(True)
        import fcntl
        try:
            fcntl.lockf(self.lock_fd, fcntl.LOCK_EX)
        except InterruptedError:
            return False
        return True

    # -- epoll -------------------------------------------------------------

    def _register(self):
        for fd in self.by_fd:
            if _accept._sys is not None:
                self.poller.register(fd, True)
            else:
                import select
                self.poller.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def _epoll_ready(self):
        if _accept._sys is not None:
            fds = self._in_thread(self.poller.wait, self.wait)
        else:
            fds = [fd for fd, _ in self._in_thread(self.poller.poll, self.wait)]
        return [self.by_fd[fd] for fd in fds if fd in self.by_fd]

    # -- listeners ---------------------------------------------------------

    def _hub_ready(self, timeout):
        """Wait in the hub until a listener can accept: the listeners (or [])."""
        waiter = Waiter(self.hub)
        timer = self.hub.loop.timer(timeout)
        try:
            for watcher, listener in zip(self.watchers, self.listeners):
                watcher.start(waiter.switch, listener)
            timer.start(waiter.switch, None)
            ready = waiter.get()
        finally:
            for watcher in self.watchers:
                watcher.stop()
            timer.close()
        if ready is None:
            return []
        # the one that fired first, then the others (they may have some too)
        return [ready] + [l for l in self.listeners if l is not ready]

    def _accept_batch(self, listeners, limit):
        conns = []
        for listener in listeners:
            while len(conns) < limit:
                try:
                    client, addr = listener.accept()
                except OSError as e:
                    if e.errno in _ACCEPT_RETRY or isinstance(e, BlockingIOError):
                        break
                    self.log.warning("turboworkers: accept() failed: %s", e)
                    self.error_pause = True
                    break
                conns.append((listener, client, addr))
        return conns

    # -- the loop ----------------------------------------------------------

    def shedding(self):
        return len(self.pool) > self.high

    def run(self):
        worker = self.worker
        pool = self.pool
        spawn = pool.spawn
        handle = worker.handle
        try:
            while self.running and worker.alive:
                self.error_pause = False
                if self.shedding() or pool.free_count() == 0:
                    gevent.sleep(SHED_POLL)
                    continue
                limit = min(self.batch, pool.free_count())
                rejoin = False
                if self.engine == "epoll":
                    # the rotation comes after ``rotate`` accepts, not a
                    # batch later
                    limit = min(limit, self.next_rotation - self.accepted)
                    ready = self._epoll_ready()
                    conns = self._accept_batch(ready, limit) if ready else []
                    if conns:
                        self.accepted += len(conns)
                        if self.accepted >= self.next_rotation:
                            self.next_rotation = self.accepted + self.rotate
                            # back of the line of exclusive waiters, after
                            # REJOIN_DELAY (below)
                            for fd in self.by_fd:
                                self.poller.unregister(fd)
                            rejoin = True
                elif self.engine in ("solo", "none"):
                    ready = self._hub_ready(self.wait)
                    conns = self._accept_batch(ready, limit) if ready else []
                else:
                    if not self.take():
                        continue
                    try:
                        if not (self.running and worker.alive):
                            break
                        ready = self._hub_ready(self.wait)
                        conns = self._accept_batch(ready, limit) if ready else []
                    finally:
                        self.give_back()
                for listener, client, addr in conns:
                    spawn(handle, listener, client, addr)
                if rejoin:
                    # the new connections run meanwhile; a stop kills this
                    # greenlet in the sleep
                    gevent.sleep(REJOIN_DELAY)
                    self._register()
                elif conns and self.engine != "solo":
                    # let the new connections run before queueing for the
                    # mutex again: the pool thread then never fights this
                    # thread for the GIL while requests are being served
                    gevent.idle()
                if self.error_pause:
                    gevent.sleep(ACCEPT_ERROR_PAUSE)
        except _StopAccepting:
            pass
        finally:
            self.running = False
            for watcher in self.watchers:
                watcher.close()

    def stop(self, greenlet):
        """Stop accepting; the mutex is given back before this returns, or
        (when a thread is waiting for it) as soon as that wait ends."""
        self.running = False
        if greenlet.dead:
            return
        if not self.in_mutex_wait:
            greenlet.kill(_StopAccepting, block=True, timeout=1.0)
        else:
            # the thread's wait is bounded by ``wait``; the loop then sees
            # ``running`` is False and gives the mutex back
            greenlet.join(timeout=self.wait + 1.0)

    def close(self):
        if self.poller is not None:
            self.poller.close()
        if self.lock_fd is not None:
            try:
                os.close(self.lock_fd)
            except OSError:
                pass


class _ThreadAcceptor:
    """Accepting with a cross-process mutex (sem, fcntl) or an exclusive
    epoll: the waiting is done by one native thread of the worker.

    Waiting for the mutex must never block the hub, which runs every
    connection of this worker. So a thread of its own (started once, not
    patched by gevent) loops over ``AcceptRound`` (compiled): take the mutex,
    wait for a listener, accept a batch with ``accept4``, give the mutex back,
    all without the GIL; then it queues the new sockets for the hub and wakes
    it through an eventfd the hub watches. Every wait is bounded by ``wait``,
    so the thread sees a stop within that time. The kernel still queues this
    worker among the others (in order of arrival for the semaphore, one
    waiter woken per connection for epoll). Two other ways were tried or
    weighed: waiting for the mutex in gevent's thread pool and for the
    listener in the hub cost about twice the context switches per connection
    (a pool task, the hub wake-up and a GIL hand-over for each step); polling
    ``try_acquire`` with a gevent.sleep back-off wakes every idle worker every
    few milliseconds and loses the semaphore's order of arrival (whoever polls
    first wins), which is what spreads connections evenly.
    """

    def __init__(self, worker, engine, listeners, pool, wait, log):
        from gevent.monkey import get_original
        self.worker = worker
        self.engine = engine
        self.pool = pool
        self.wait = wait
        self.log = log
        self.hub = get_hub()
        self.running = True
        self.listeners = listeners
        self.by_fd = {l.fileno(): l for l in listeners}
        connections = max(1, worker.worker_connections)
        # sit out above 7/8 full, so the other workers serve
        self.high = connections * SHED_NUM // SHED_DEN
        self.ready = collections.deque()
        self._sleep = get_original("time", "sleep")
        self._done = get_original("_thread", "allocate_lock")()
        self._start_thread = get_original("_thread", "start_new_thread")
        self.lock_fd = None
        self.rotate = _accept.rotate_from_env()
        for l in listeners:
            l.setblocking(False)
            _accept.defer_accept(l)
        if _accept._sys is None:
            raise _accept.AcceptConfigError("%s=%s: needs the compiled extension with a gevent "
                                            "worker" % (_accept.ENV, engine))
        sem = lock = None
        if engine == "sem":
            sem = _accept.Shared.semaphore
            if sem is None:
                raise _accept.AcceptConfigError("%s=sem: no semaphore (the compiled extension "
                                                "is missing or the master made none)"
                                                % _accept.ENV)
        elif engine == "fcntl":
            if _accept.Shared.lock_path is None:
                raise _accept.AcceptConfigError("%s=fcntl: the master made no lock file"
                                                % _accept.ENV)
            self.lock_fd = os.open(_accept.Shared.lock_path, os.O_RDWR | os.O_CLOEXEC)
            lock = _accept._sys.FileLock(self.lock_fd)
        self.poller = _accept._sys.Epoll()
        self._register()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # written when the worker stops: the thread, waiting for a listener
        # with the mutex in hand, lets it go at once instead of taking one
        # more connection (past max_requests, say) or holding the others'
        # turn until its wait ends
        self.stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.poller.register(self.stop_fd, False)
        self.round = _accept._sys.AcceptRound(self.poller, self.wake_fd, ACCEPT_BATCH,
                                              ACCEPTS_PER_TURN, sem, lock, STUCK_AFTER,
                                              self.stop_fd)
        self.accepted = 0
        self.next_rotation = self.rotate
        self.watcher = self.hub.loop.io(self.wake_fd, 1)

    def _register(self):
        for fd in self.by_fd:
            self.poller.register(fd, self.engine == "epoll")

    # -- in the thread -----------------------------------------------------

    def _rejoin_later(self):
        # Out of the rotation (the listeners unregistered) for REJOIN_DELAY.
        # The hub is woken now for what was just accepted, not after the
        # wait. The wait is on the poller, where only stop_fd is left, so a
        # stop ends it at once.
        self.round.flush()
        if self.running and self.worker.alive:
            self.poller.wait(REJOIN_DELAY)

    def _thread_main(self):
        pool = self.pool
        ready = self.ready
        worker = self.worker
        round_ = self.round.round
        notify_next = self.round.notify_next
        epoll = self.engine == "epoll"
        try:
            while self.running and worker.alive:
                free = pool.size - len(pool) - len(ready)
                if len(pool) + len(ready) > self.high or free <= 0:
                    # the turn goes to the other workers until this one
                    # drops below the mark
                    self.round.give_back()
                    self.round.flush()
                    self._sleep(SHED_POLL)
                    continue
                limit = min(ACCEPT_BATCH, free)
                if epoll:
                    # the rotation comes after ``rotate`` accepts, not a
                    # batch later
                    limit = min(limit, self.next_rotation - self.accepted)
                got, error, fatal, busy = round_(limit, self.wait)
                if busy:
                    # the hub is stuck (in CPU-bound code, say): the turn
                    # went to the other workers; look again in a moment
                    self._sleep(SHED_POLL)
                    continue
                if got:
                    ready.extend(got)
                    # the hub is woken as the next round starts, once this
                    # thread holds the GIL no more
                    notify_next()
                    self.accepted += len(got)
                    if epoll and self.accepted >= self.next_rotation:
                        # to the back of the line of exclusive waiters
                        self.next_rotation = self.accepted + self.rotate
                        for fd in self.by_fd:
                            self.poller.unregister(fd)
                        self._rejoin_later()
                        self._register()
                if fatal:
                    raise OSError(fatal, os.strerror(fatal))
                if error:
                    self.error = OSError(error, os.strerror(error))
                    self.round.notify()
                    self._sleep(ACCEPT_ERROR_PAUSE)
        except BaseException as e:  # reported by the hub
            self.error = e
            self.running = False
        finally:
            try:
                self.round.give_back()
            except OSError:
                pass
            self._done.release()
            self.round.notify()

    # -- in the hub ----------------------------------------------------------

    error = None

    def _on_ready(self):
        try:
            os.read(self.wake_fd, 8)
        except BlockingIOError:
            pass
        self.round.pending = 0
        ready = self.ready
        pool = self.pool
        handle = self.worker.handle
        while ready:
            fd, nfd, addr = ready.popleft()
            listener = self.by_fd[fd]
            client = socket.socket(listener.family, socket.SOCK_STREAM, fileno=nfd)
            if pool.full():
                # cannot happen (the thread counts free places), and the hub
                # must never block: wait for a place in a greenlet of its own
                gevent.spawn(pool.spawn, handle, listener, client, addr)
            else:
                pool.spawn(handle, listener, client, addr)
        if self.error is not None:
            e, self.error = self.error, None
            self.log.warning("turboworkers: accepting: %r", e)

    def run(self):
        """Start the thread; returns at once (``dead`` says when it ended)."""
        self.watcher.start(self._on_ready)
        self._done.acquire()
        self._start_thread(self._thread_main, ())

    @property
    def dead(self):
        return not self._done.locked()

    def stop_now(self):
        """Tell the thread to take no more connections (it gives the mutex
        back at once); ``stop`` then waits for it."""
        self.running = False
        try:
            os.write(self.stop_fd, (1).to_bytes(8, "little"))
        except OSError:
            pass

    def stop(self):
        """Stop accepting. The thread gives the mutex back and ends;
        what it accepted until then is served."""
        self.stop_now()
        deadline = time.monotonic() + self.wait + 2.0
        while not self.dead and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self._on_ready()

    def close(self):
        self.watcher.stop()
        if self.dead:
            self.poller.close()
            for fd in (self.wake_fd, self.stop_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.lock_fd is not None:
            try:
                os.close(self.lock_fd)
            except OSError:
                pass


class _NamedListener:
    """A listener whose address was read while it was open (see run())."""

    __slots__ = ("_sock", "_name")

    def __init__(self, sock, name):
        self._sock = sock
        self._name = name

    def getsockname(self):
        return self._name

    def __getattr__(self, attr):
        return getattr(self._sock, attr)


class GeventMutexWorker(GeventWorker):
    """Drop-in for ``-k gevent``: ``gunicorn -k turboworkers.GeventMutexWorker app:app``."""

    # the event loop's fine tick (run() makes it, compiled mode only)
    _tick = None

    @staticmethod
    def default_accept(listeners):
        return "sem"

    @classmethod
    def setup(cls):
        # In the master, at start and on every HUP: the semaphore (or lock
        # file) is made once and kept.
        engine = glue.accept_engine_at_setup(cls.__name__)
        if engine == "queue":
            raise glue.ConfigError(cls.__name__, _queue_refusal())
        _accept.Shared.ensure_for(engine)

    def init_process(self):
        name = self.__class__.__name__
        glue.check_settings_at_boot(self.cfg, name)
        if self.cfg.workers <= 1:
            # nobody to share the listeners with: no mutex
            self.accept_engine = "solo"
        else:
            engine = glue.accept_engine_at_boot(name, self.sockets, self.default_accept,
                                                reuse_port=self.cfg.reuse_port)
            if engine == "queue":
                glue._refuse(glue.ConfigError(name, _queue_refusal()))
            self.accept_engine = engine
        self.http = None
        self._conns = {}
        # GeventWorker: monkey-patching, hub.reinit(), then run()
        super().init_process()

    # -- the worker's main greenlet ------------------------------------------

    def run(self):
        self.http = glue.HttpCore(self.cfg, self.log, multithread=True)
        if self.http.accelerated:
            # gevent's sockets are non-blocking underneath: responses go out
            # with one sendmsg, gevent's sendall only for what did not fit
            _ext.response.register_socket_class(gevent.socket.socket, inner="_sock")
        self._h2 = "h2" in (getattr(self.cfg, "http_protocols", None) or ())
        self._gunicorn_http = not self.http.accelerated or self._h2
        if self.http.accelerated and self._h2:
            self.log.info("turboworkers: gunicorn's HTTP code (http_protocols includes h2)")
        self._ssl_context = ssl_context(self.cfg) if self.cfg.is_ssl else None
        # plain connections are read through the parser's CoopSource (see
        # handle_connection); TLS ones through the SSL socket
        self._coop_source = (_ext.http_parser.CoopSource
                             if self.http.accelerated and self._ssl_context is None else None)
        self._pre_request, self._post_request = glue.request_hooks(self.cfg, self.log)
        if self.http.accelerated:
            # what HttpCore.response does, without its frame per request
            self._response = _ext.response.Response
            options = self.http.response_options()
            self._response_options = (options["cfg_sendfile"], options["is_ssl"],
                                      options["uwsgi"])
        # gunicorn's AsyncWorker.is_already_handled, unless a subclass has
        # its own
        self._already_handled = (None if type(self).is_already_handled is
                                 base_async.AsyncWorker.is_already_handled
                                 else self.is_already_handled)
        self._access_log = glue.access_log_wanted(self.log)
        # One Response per connection, made again for each request with
        # Response.reuse(), when nothing but the application's own call can
        # see it: no post_request hook and no access log (either may keep
        # it past its request). That spares a Response and its two bound
        # methods per request, objects that live while the application
        # waits and so count towards the cyclic collector's runs.
        self._reuse_response = (self.http.accelerated and self._post_request is None
                                and not self._access_log)
        self._keepalive = self.cfg.keepalive
        self._hub = get_hub()
        self._loop = self._hub.loop
        # While requests are in flight the loop wakes every TIMER_TICK, so
        # that their timers (gevent.sleep, timeouts) fire on time and not up
        # to 2 ms late (see _tick.pyx). Compiled mode only. The prepare
        # watcher that switches it on and off runs last before the wait
        # (lowest priority): after gevent's own, which runs the greenlets
        # spawned for new connections, whose first requests begin there.
        self._tick = _ext.tick.Tick(TIMER_TICK) if _ext.tick is not None else None
        tick_watchers = ()
        if self._tick is not None:
            tick_watchers = (self._loop.io(self._tick.fileno(), 1),
                             self._loop.prepare(priority=self._loop.MINPRI))
            for watcher, callback in zip(tick_watchers, (self._tick.fire, self._tick.prepare)):
                # the tick alone does not keep the loop running
                watcher.ref = False
                watcher.start(callback)
        # Listener addresses are read now: a graceful stop closes the
        # listeners while connections accepted just before are still to be
        # served, and getsockname() of a closed listener fails (EBADF: the
        # connection would be closed unread, a reset for its client).
        self._listener_names = {s: s.getsockname() for s in self.sockets}
        self._named_listeners = {s: _NamedListener(s, name)
                                 for s, name in self._listener_names.items()}
        self.pool = gevent.pool.Pool(self.worker_connections)
        wait = _accept.idle_wait(self.timeout)
        threaded = self.accept_engine in ("sem", "fcntl", "epoll") and _accept._sys is not None
        try:
            acceptor = (_ThreadAcceptor if threaded else _Acceptor)(
                self, self.accept_engine, self.sockets, self.pool, wait, self.log)
        except _accept.AcceptConfigError as e:
            glue._refuse(glue.ConfigError(self.__class__.__name__, str(e)))
        self.log.debug("turboworkers: accept engine %s%s", self.accept_engine,
                       " (accept thread)" if threaded else "")
        self._stopping = gevent.event.Event()
        if threaded:
            self._thread_acceptor = acceptor
            acceptor.run()
            accepting = acceptor
        else:
            accepting = gevent.spawn(acceptor.run)
        try:
            while self.alive and not accepting.dead:
                self.notify()
                self._stopping.wait(1.0)
            if accepting.dead and self.alive:
                self.log.error("turboworkers: accepting stopped: %r",
                               getattr(accepting, "exception", None) or acceptor.error)
            self._stop_gracefully(acceptor, accepting, threaded)
        finally:
            acceptor.close()
            for watcher in tick_watchers:
                watcher.close()
            if self._tick is not None:
                self._tick.close()

    def _stop_gracefully(self, acceptor, accepting, threaded):
        # stop accepting (the mutex goes to the other workers), then let the
        # connections in flight finish within graceful_timeout
        if threaded:
            acceptor.stop()
        else:
            acceptor.stop(accepting)
        for s in self.sockets:
            util.close(s)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while len(self.pool):
            self._close_idle()
            if time.monotonic() >= deadline:
                self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                self.pool.kill(timeout=1)
                return
            self.notify()
            self.pool.join(timeout=min(1.0, max(0.01, deadline - time.monotonic())))

    def _close_idle(self):
        """End the keep-alive connections that wait for a next request with
        nothing of it received."""
        for greenlet, (client, parser) in list(self._conns.items()):
            if parser is None or not parser.at_rest() or greenlet.dead:
                continue
            if _has_input(client):
                continue
            greenlet.kill(block=False)

    def handle_exit(self, sig, frame):
        # SIGTERM: as gunicorn's (alive = False), and wake the main greenlet
        # now rather than at its next heartbeat
        super().handle_exit(sig, frame)
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            get_hub().loop.run_callback(stopping.set)

    # ``alive`` is set False by gunicorn's code too (max_requests in its
    # handle_request, which serves pure mode and h2; its signal handlers):
    # whoever sets it, the accept thread lets the mutex go at once, before
    # the response that ends this worker's life reaches its client (who may
    # connect again at once).
    @property
    def alive(self):
        return self._alive

    @alive.setter
    def alive(self, value):
        self._alive = value
        if not value:
            acceptor = getattr(self, "_thread_acceptor", None)
            if acceptor is not None:
                acceptor.stop_now()

    def handle_usr1(self, sig, frame):
        gevent.spawn(self._reopen_logs, sig, frame)

    def _reopen_logs(self, sig, frame):
        base.Worker.handle_usr1(self, sig, frame)
        if self.http is not None:
            self.http.logs_reopened()

    # -- connections -------------------------------------------------------

    def listener_name(self, listener):
        name = self._listener_names.get(listener)
        if name is None:
            name = self._listener_names[listener] = listener.getsockname()
        return name

    def handle(self, listener, client, addr):
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            try:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self._gunicorn_http:
            if self._ssl_context is not None:
                try:
                    # AsyncWorker.handle does the handshake when it was not
                    # done on connect
                    client = self._ssl_context.wrap_socket(
                        client, server_side=True,
                        suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                        do_handshake_on_connect=self.cfg.do_handshake_on_connect)
                except BaseException as e:
                    self.log.debug("TLS handshake failed: %s", e)
                    util.close(client)
                    return
            # gunicorn's AsyncWorker.handle asks the listener for its address
            return super().handle(self._named_listeners.get(listener, listener), client, addr)
        self.handle_connection(listener, client, addr)

    def handle_connection(self, listener, client, addr):
        """Serve the requests of one connection: keep-alive and pipelining."""
        req = None
        parser = None
        timer = None
        source = None
        me = gevent.getcurrent()
        try:
            client.setblocking(1)
            if self._ssl_context is not None:
                client = self._ssl_context.wrap_socket(
                    client, server_side=True,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                    do_handshake_on_connect=self.cfg.do_handshake_on_connect)
                if not self.cfg.do_handshake_on_connect:
                    client.do_handshake()
            elif self._coop_source is not None:
                # Each request head within ``keepalive`` seconds, as gunicorn's
                # gevent worker times it with a gevent.Timeout per request:
                # here one timer per connection, started only when the parser
                # has to wait.
                if self._keepalive:
                    timer = self._loop.timer(self._keepalive, self._keepalive)
                source = self._coop_source(client, timer, me, _KeepaliveExpired,
                                           self._loop.io(client.fileno(), 1), Waiter, self._hub)
            parser = self.http.parser(client, addr, self.listener_name(listener), source)
            # [response, its start_response, its send_early_hints] (see run())
            kept = [None, None, None] if self._reuse_response and self._keepalive else None
            conns = self._conns
            conns[me] = (client, None)
            try:
                if not self._keepalive:
                    environ = parser.next_request()
                    if environ is not None:
                        req = parser.req
                        self.serve_request(listener, req, client, addr, environ, kept)
                else:
                    idle = (client, parser)
                    busy = (client, None)
                    first = True
                    while True:
                        req = None
                        environ = None
                        if not first:
                            # idle between requests: graceful shutdown may end it
                            conns[me] = idle
                        if timer is not None:
                            try:
                                environ = parser.next_request()
                            except _KeepaliveExpired:
                                break
                        else:
                            with self.timeout_ctx():
                                environ = parser.next_request()
                        if environ is None:
                            break
                        conns[me] = busy
                        first = False
                        req = parser.req
                        if not self.serve_request(listener, req, client, addr, environ, kept):
                            break
            except http.errors.NoMoreData as e:
                self.log.debug("Ignored premature client disconnection. %s", e)
            except StopIteration as e:
                self.log.debug("Closing connection. %s", e)
            except (OSError, gevent.GreenletExit):
                raise
            except Exception as e:
                self.handle_error(req, client, addr, e)
        except gevent.GreenletExit:
            pass
        except OSError as e:
            if isinstance(e, ssl.SSLError):
                if e.args[0] == ssl.SSL_ERROR_EOF:
                    self.log.debug("ssl connection closed")
                else:
                    self.log.debug("Error processing SSL request.")
                    self.handle_error(req, client, addr, e)
            else:
                glue.log_socket_error(self.log, e)
        except BaseException as e:
            self.handle_error(req, client, addr, e)
        finally:
            self._conns.pop(me, None)
            if timer is not None:
                timer.close()
            if source is not None:
                source.close()
            rested = True
            if parser is not None:
                rested = parser.at_rest()
                parser.close()
            if rested:
                util.close(client)
            else:
                # unread request bytes would turn a plain close into a reset
                # that can cut off the response
                util.close_graceful(client)

    def serve_request(self, listener, req, client, addr, environ, kept=None):
        """One request: True when the connection may carry another one.

        ``kept``: the connection's list [response, start_response,
        send_early_hints] when its Response is reused (see run()), else None.
        """
        # one Python frame per request: this is the hot path
        tick = self._tick
        try:
            request_start = datetime.now() if self._access_log else None
            resp = None
            if tick is not None:
                tick.begin()
            try:
                if self._pre_request is not None:
                    self._pre_request(self, req)
                if kept is None:
                    resp = self._response(client, req.version, req.method, req.should_close(),
                                          *self._response_options)
                    start_response = resp.start_response
                    environ["wsgi.early_hints"] = resp.send_early_hints
                else:
                    resp = kept[0]
                    if resp is None:
                        resp = kept[0] = self._response(client, req.version, req.method,
                                                        req.should_close(), *self._response_options)
                        kept[1] = resp.start_response
                        kept[2] = resp.send_early_hints
                    else:
                        resp.reuse(req.version, req.method, req.should_close())
                    start_response = kept[1]
                    environ["wsgi.early_hints"] = kept[2]
                self.nr += 1
                if self.nr >= self.max_requests:
                    if self.alive:
                        self.log.info("Autorestarting worker after current request.")
                        self.alive = False
                        self._stopping.set()
                if not self._alive or not self._keepalive:
                    resp.force_close()
                respiter = self.wsgi(environ, start_response)
                if self._already_handled is not None:
                    if self._already_handled(respiter):
                        return False
                elif respiter == ALREADY_HANDLED:
                    return False
                if type(respiter) is list and request_start is None:
                    # glue.write_answer's common case, without its frame
                    resp.write_list(respiter)
                else:
                    glue.write_answer(self, req, environ, resp, respiter, request_start)
                if resp.should_close():
                    self.log.debug("Closing connection. ")
                    return False
                return True
            except OSError:
                util.reraise(*sys.exc_info())
            except (Exception, SystemExit):
                if resp is not None and resp.headers_sent:
                    # Headers are out: a 500 now would corrupt the response.
                    self.log.exception("Error handling request")
                    try:
                        client.shutdown(socket.SHUT_RDWR)
                        client.close()
                    except OSError:
                        pass
                    raise StopIteration()
                raise
            finally:
                if tick is not None:
                    tick.end()
                if self._post_request is not None:
                    try:
                        self._post_request(self, req, environ, resp)
                    except Exception:
                        self.log.exception("Exception in post_request hook")
        except gevent.GreenletExit:
            # killed (graceful timeout): the connection ends here
            return False
        except SystemExit:
            # as gunicorn's gevent worker: a SystemExit raised by the app
            # (or a timeout abort) is swallowed
            pass
        return True


def _queue_refusal():
    return ("%s=queue: a gevent worker never sleeps in accept(); "
            "use sem, fcntl, epoll or none" % _accept.ENV)


def _has_input(client):
    """Whether bytes wait on the connection (or in its TLS buffer)."""
    try:
        if getattr(client, "pending", None) is not None and client.pending():
            return True
    except (OSError, ValueError):
        return True
    try:
        fd = client.fileno()
    except OSError:
        return False
    if fd < 0:
        return False
    from gevent.monkey import get_original
    poll = get_original("select", "poll")()
    poll.register(fd, 1)
    try:
        return bool(poll.poll(0))
    except OSError:
        return True
