"""How a GeventMutexWorker accepts: three acceptors, chosen by engine.

- ``TurnAcceptor`` (``sem``, ``fcntl``; compiled extension): a native thread
  waits for the cross-process mutex, and the hub, during its turn, for the
  listeners;
- ``EpollThreadAcceptor`` (``epoll``; compiled extension): a native thread is one
  of the listeners' exclusive waiters and hands new sockets to the hub;
- ``HubAcceptor`` (one worker, ``none``, or no compiled extension): a greenlet
  accepts; a mutex, if any, is waited for in gevent's thread pool.

Each gives every new connection a greenlet of the worker's pool, and sits
out while the pool is more than 7/8 full. This module imports gevent, as
gevent_mutex does.
"""
import collections
import errno
import os
import socket
import time

import gevent
from gevent.hub import Waiter, get_hub
from gevent.monkey import get_original

from turboworkers import accept as _accept

# Connections one wake-up (of the accept thread, or of the hub during its
# turn) takes at most.
ACCEPT_BATCH = 16
# Connections one turn at the mutex takes before the mutex goes to the next
# worker in line (over several wake-ups if they come one by one).
ACCEPTS_PER_TURN = 16
# A worker whose open connections exceed this share of worker_connections
# stops taking the mutex until it drops below it.
SHED_NUM, SHED_DEN = 7, 8
# While shedding: how often the worker looks at its pool again.
SHED_POLL = 0.005
# A hub that has taken nothing this long while connections wait is stuck (in
# CPU-bound code, say): EpollThreadAcceptor accepts no more for it meanwhile,
# and TurnAcceptor takes its turn back (its first look; later ones double).
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
_ACCEPT_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED, errno.EINTR,
                 errno.EPROTO)



class _StopAccepting(Exception):
    """Thrown into the accepting greenlet when the worker stops."""


def _open_mutex(engine):
    """(semaphore, lock file descriptor) of a mutex engine, either None."""
    if engine == "sem":
        sem = _accept.Shared.semaphore
        if sem is None:
            raise _accept.AcceptConfigError("%s=sem: no semaphore (the compiled extension "
                                            "is missing or the master made none)" % _accept.ENV)
        return sem, None
    if engine == "fcntl":
        if _accept.Shared.lock_path is None:
            raise _accept.AcceptConfigError("%s=fcntl: the master made no lock file"
                                            % _accept.ENV)
        return None, os.open(_accept.Shared.lock_path, os.O_RDWR | os.O_CLOEXEC)
    return None, None


class _Acceptor:
    """What every acceptor holds; the listeners made non-blocking, and
    TCP_DEFER_ACCEPT set where other workers share them."""

    error = None
    lock_fd = None

    def __init__(self, worker, engine, listeners, pool, wait, log):
        self.worker = worker
        self.engine = engine
        self.listeners = listeners
        self.pool = pool
        self.wait = wait
        self.log = log
        self.hub = get_hub()
        self.running = True
        self.by_fd = {l.fileno(): l for l in listeners}
        connections = max(1, worker.worker_connections)
        # shared listeners: sit out above 7/8 full, so the other workers serve
        self.high = connections * SHED_NUM // SHED_DEN if engine != "solo" else connections
        for l in listeners:
            l.setblocking(False)
            if engine != "solo":
                _accept.defer_accept(l)

    def _close_lock_fd(self):
        if self.lock_fd is not None:
            try:
                os.close(self.lock_fd)
            except OSError:
                pass


class HubAcceptor(_Acceptor):
    """Accepting from a greenlet, waiting for the listeners in the hub.

    Used with one worker (``solo``: no mutex), for ``none`` (every worker
    waits, as stock gunicorn), and where the compiled extension is missing
    (``fcntl`` and ``epoll`` from the standard library). There the mutex
    (or the exclusive epoll) is waited for in a thread of gevent's thread
    pool, never in the hub, which runs every connection of this worker; a
    ``try_acquire`` in the hub comes first, so a thread is only used when
    another worker holds the mutex. ``TurnAcceptor`` and
    ``EpollThreadAcceptor`` below are the faster ways when the extension is
    there.
    """

    def __init__(self, worker, engine, listeners, pool, wait, log):
        super().__init__(worker, engine, listeners, pool, wait, log)
        self.in_mutex_wait = False
        self.batch = ACCEPT_BATCH
        self.watchers = [self.hub.loop.io(l.fileno(), 1) for l in listeners]
        self.lock = self.poller = None
        self.sem, self.lock_fd = _open_mutex(engine)
        if self.lock_fd is not None and _accept._sys is not None:
            self.lock = _accept._sys.FileLock(self.lock_fd)
        if engine == "epoll":
            self.rotate = _accept.rotate_from_env()
            self.accepted = 0
            self.next_rotation = self.rotate
            if _accept._sys is not None:
                self.poller = _accept._sys.Epoll()
            else:
                # gevent's patched select module has no epoll
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
        self._close_lock_fd()


class _ThreadedAcceptor(_Acceptor):
    """An acceptor with a native thread of its own (started once, not
    patched by gevent), which needs the compiled extension."""

    def __init__(self, worker, engine, listeners, pool, wait, log):
        super().__init__(worker, engine, listeners, pool, wait, log)
        if _accept._sys is None:
            raise _accept.AcceptConfigError("%s=%s: needs the compiled extension with a gevent "
                                            "worker" % (_accept.ENV, engine))
        self._sleep = get_original("time", "sleep")
        self._done = get_original("_thread", "allocate_lock")()
        self._start_thread = get_original("_thread", "start_new_thread")

    @property
    def dead(self):
        return not self._done.locked()

    @staticmethod
    def _write(fd):
        try:
            os.write(fd, (1).to_bytes(8, "little"))
        except OSError:
            pass

    def _join(self):
        # every wait of the thread is bounded by ``wait``
        deadline = time.monotonic() + self.wait + 2.0
        while not self.dead and time.monotonic() < deadline:
            gevent.sleep(0.01)

    def _close_fds(self, *fds):
        # only once the thread is gone: it may still write to them
        if self.dead:
            self.poller.close()
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._close_lock_fd()


class EpollThreadAcceptor(_ThreadedAcceptor):
    """Accepting with an exclusive epoll (``epoll``) and the compiled
    extension: the waiting is done by one native thread of the worker.

    The hub, which runs every connection of this worker, must never block,
    and it cannot itself be one of the listeners' exclusive waiters: libev
    waits on an epoll of its own, and an exclusive wake-up reaches only a
    thread blocked in ``epoll_wait`` on the instance it was registered in,
    not one that polls that instance. So a thread of its own (started once,
    not patched by gevent) loops over ``AcceptRound`` (compiled): wait for a
    listener, accept a batch with ``accept4``, all without the GIL; then it
    queues the new sockets for the hub and wakes it through an eventfd the
    hub watches. Every wait is bounded by ``wait``, so the thread sees a
    stop within that time. The kernel wakes one waiting worker per
    connection; after ``rotate`` accepts a worker goes to the back of the
    line (see REJOIN_DELAY). The mutex engines do better (TurnAcceptor):
    there the hub waits for the listeners during its turn.
    """

    def __init__(self, worker, engine, listeners, pool, wait, log):
        super().__init__(worker, engine, listeners, pool, wait, log)
        self.ready = collections.deque()
        self.rotate = _accept.rotate_from_env()
        self.poller = _accept._sys.Epoll()
        self._register()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # written when the worker stops: the thread, waiting for a listener,
        # ends at once instead of taking one more connection (past
        # max_requests, say)
        self.stop_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.poller.register(self.stop_fd, False)
        self.round = _accept._sys.AcceptRound(self.poller, self.wake_fd, ACCEPT_BATCH,
                                              ACCEPTS_PER_TURN, None, None, STUCK_AFTER,
                                              self.stop_fd)
        self.accepted = 0
        self.next_rotation = self.rotate
        self.watcher = self.hub.loop.io(self.wake_fd, 1)

    def _register(self):
        for fd in self.by_fd:
            self.poller.register(fd, True)

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
        try:
            while self.running and worker.alive:
                free = pool.size - len(pool) - len(ready)
                if len(pool) + len(ready) > self.high or free <= 0:
                    # out of the line of waiters until this worker drops
                    # below the mark: the connections go to the others
                    self.round.flush()
                    self._sleep(SHED_POLL)
                    continue
                # the rotation comes after ``rotate`` accepts, not a batch
                # later
                limit = min(ACCEPT_BATCH, free, self.next_rotation - self.accepted)
                got, error, fatal, busy = round_(limit, self.wait)
                if busy:
                    # the hub is stuck (in CPU-bound code, say): nothing
                    # was accepted; look again in a moment
                    self._sleep(SHED_POLL)
                    continue
                if got:
                    ready.extend(got)
                    # the hub is woken as the next round starts, once this
                    # thread holds the GIL no more
                    notify_next()
                    self.accepted += len(got)
                    if self.accepted >= self.next_rotation:
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
            # before the release: once ``dead``, close() may close the fd
            self.round.notify()
            self._done.release()

    # -- in the hub ----------------------------------------------------------

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

    def stop_now(self):
        """Tell the thread to take no more connections (it leaves the line
        of waiters at once); ``stop`` then waits for it."""
        self.running = False
        self._write(self.stop_fd)

    def stop(self):
        """Stop accepting. The thread ends; what it accepted until then is
        served."""
        self.stop_now()
        self._join()
        self._on_ready()

    def close(self):
        self.watcher.stop()
        self._close_fds(self.wake_fd, self.stop_fd)


class TurnAcceptor(_ThreadedAcceptor):
    """Accepting with a cross-process mutex (sem, fcntl) and the compiled
    extension: a native thread waits for the mutex, the hub for the listeners.

    The thread (started once, not patched by gevent) waits for the mutex
    without the GIL (``AcceptRound.take``). Once it holds it, the turn is
    the hub's: woken through an eventfd (``turn_fd``), it watches the
    listeners in its own loop and accepts there (``accept_from``), up to
    ACCEPTS_PER_TURN connections; then it lets the mutex go and tells the
    thread (``over_fd``), which queues for the mutex again. A connection so
    wakes the hub alone, and the thread wakes twice per turn. (With the
    thread also waiting for the listeners, as EpollThreadAcceptor does for
    epoll, a connection woke the thread, and the thread the hub.) The hub
    also ends its turn when its pool passes 7/8 of ``worker_connections``,
    on an accept error, and when the worker stops.

    While the hub has the turn, the thread looks at it at growing intervals
    (STUCK_AFTER, doubling up to ``wait``) and takes it back:

    - from a stuck hub (in CPU-bound code, say): a listener is readable and
      nothing was accepted since the last look. The connections stay in the
      listen queue for the other workers. The thread then queues again only
      once the hub has run and seen it, so a stuck worker does not keep
      taking turns;
    - from an idle one, after ``wait`` seconds without a connection: the
      mutex moves on, and a worker waiting for the fcntl lock (no time limit
      there) sees a stop within that time.

    The mutex is let go once: ``end_turn`` is a compare-and-swap, whichever
    of the hub and the thread calls it first.
    """

    def __init__(self, worker, engine, listeners, pool, wait, log):
        super().__init__(worker, engine, listeners, pool, wait, log)
        sem, self.lock_fd = _open_mutex(engine)
        lock = _accept._sys.FileLock(self.lock_fd) if self.lock_fd is not None else None
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        # thread -> hub: a turn began, or the thread took it back
        self.turn_fd = os.eventfd(0, flags)
        # hub -> thread: the hub let go of the listeners
        self.over_fd = os.eventfd(0, flags)
        # written when the worker stops
        self.stop_fd = os.eventfd(0, flags)
        # the thread's wait while the hub has the turn
        self.poller = _accept._sys.Epoll()
        self.poller.register(self.over_fd, False)
        self.poller.register(self.stop_fd, False)
        self.round = _accept._sys.AcceptRound(self.poller, self.turn_fd, ACCEPT_BATCH,
                                              ACCEPTS_PER_TURN, sem, lock, STUCK_AFTER,
                                              self.stop_fd)
        # the thread's look at the listeners (a stuck hub leaves them readable)
        self._probe = get_original("select", "poll")()
        for l in listeners:
            self._probe.register(l.fileno(), 1)
        self.in_turn = False           # the hub watches the listeners
        self.turns_seen = 0            # round.turns when the hub last looked
        self.pause_due = False         # an accept error: pause before the next turn
        loop = self.hub.loop
        self.turn_watcher = loop.io(self.turn_fd, 1)
        self.watchers = [(loop.io(l.fileno(), 1), l) for l in listeners]

    # -- in the thread -----------------------------------------------------

    def _thread_main(self):
        round_ = self.round
        pool = self.pool
        worker = self.worker
        try:
            while self.running and worker.alive:
                if len(pool) > self.high or pool.free_count() <= 0:
                    # the turns go to the other workers until this one drops
                    # below the mark
                    self._sleep(SHED_POLL)
                    continue
                if self.pause_due:
                    self.pause_due = False
                    self._sleep(ACCEPT_ERROR_PAUSE)
                    continue
                if round_.take(self.wait):
                    self._watch_turn()
        except BaseException as e:  # reported by the hub
            self.error = e
            self.running = False
        finally:
            try:
                round_.end_turn()
            except OSError:
                pass
            # before the release: once ``dead``, close() may close the fd
            self._write(self.turn_fd)
            self._done.release()

    def _watch_turn(self):
        """Until the turn is over and the hub has seen it so; a stuck or
        idle hub's turn is taken back.

        The looks are timed, not counted: a wake-up before the next look (an
        ``over_fd`` write left from the end of an earlier turn, say) only
        resumes the wait, so a turn the hub has not yet had a chance to use
        is never judged."""
        round_ = self.round
        interval = STUCK_AFTER
        seen = round_.accepted
        quiet_since = time.monotonic()
        look_at = quiet_since + interval
        while True:
            self.poller.wait(max(0.0, look_at - time.monotonic()))
            # only a wake-up: the state below says what happened
            _drain(self.over_fd)
            if not (self.running and self.worker.alive):
                # the hub ends the turn as it stops; if it has not yet
                if round_.end_turn():
                    self._write(self.turn_fd)
                return
            holding = round_.holding
            now = time.monotonic()
            if holding == 0:
                if not self.in_turn and self.turns_seen == round_.turns:
                    return
                # taken back: wait until the hub has seen it (it writes
                # over_fd then)
                look_at = now + self.wait
                continue
            if holding != 1:
                # being let go by the hub, which writes over_fd once done
                look_at = now + SHED_POLL
                continue
            if now < look_at:
                continue
            accepted = round_.accepted
            if accepted != seen:
                seen = accepted
                quiet_since = now
                interval = STUCK_AFTER
                look_at = now + interval
                continue
            if self._probe.poll(0) or now - quiet_since >= self.wait:
                # stuck (a connection waits, none taken), or idle
                if round_.end_turn():
                    self._write(self.turn_fd)
                look_at = now + self.wait
                continue
            interval = min(interval * 2, self.wait)
            # the idle end comes ``wait`` after the last accept, not later
            look_at = min(now + interval, quiet_since + self.wait)

    # -- in the hub ----------------------------------------------------------

    def _on_turn(self):
        _drain(self.turn_fd)
        self.turns_seen = self.round.turns
        if self.round.holding == 1 and self.running:
            if not self.in_turn:
                self.in_turn = True
                for watcher, listener in self.watchers:
                    watcher.start(self._on_listener, listener)
        else:
            self._let_go()
            # the thread waits for this after taking a turn back
            self._write(self.over_fd)

    def _let_go(self):
        if self.in_turn:
            self.in_turn = False
            for watcher, _ in self.watchers:
                watcher.stop()

    def _end_turn(self):
        self._let_go()
        self.round.end_turn()
        self._write(self.over_fd)

    def _on_listener(self, listener):
        round_ = self.round
        pool = self.pool
        if round_.holding != 1:
            # taken back by the thread: the turn_fd callback says so too
            self._let_go()
            return
        limit = min(ACCEPT_BATCH, pool.size - len(pool))
        conns, err = round_.accept_from(listener.fileno(), limit) if limit > 0 else ((), 0)
        if conns:
            handle = self.worker.handle
            family = listener.family
            for nfd, addr in conns:
                pool.spawn(handle, listener, socket.socket(family, socket.SOCK_STREAM,
                                                           fileno=nfd), addr)
        if err:
            self.log.warning("turboworkers: accept() failed: %s", OSError(err, os.strerror(err)))
            self.pause_due = True
            self._end_turn()
        elif round_.turn_left <= 0 or len(pool) > self.high or limit <= 0:
            self._end_turn()

    def run(self):
        """Start the thread; returns at once (``dead`` says when it ended)."""
        self.turn_watcher.start(self._on_turn)
        self._done.acquire()
        self._start_thread(self._thread_main, ())

    def stop_now(self):
        """Take no more connections: the turn, if any, ends now (the mutex
        goes to the next worker), and the thread ends; ``stop`` waits for it."""
        self.running = False
        self._write(self.stop_fd)
        if self.in_turn or self.round.holding:
            self._end_turn()

    def stop(self):
        self.stop_now()
        self._join()
        self._let_go()
        if self.error is not None:
            e, self.error = self.error, None
            self.log.warning("turboworkers: accepting: %r", e)

    def close(self):
        self.turn_watcher.stop()
        self._let_go()
        for watcher, _ in self.watchers:
            watcher.close()
        self._close_fds(self.turn_fd, self.over_fd, self.stop_fd)


def _drain(fd):
    try:
        os.read(fd, 8)
    except OSError:
        pass
