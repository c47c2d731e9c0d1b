"""GeventMutexWorker: gunicorn's gevent worker, herd-free and on the Cython HTTP core.

gevent is set up by gunicorn's own ``GeventWorker`` (monkey-patching, the hub
made again after fork, signal handlers run in greenlets), which this class
extends. What it replaces:

- accepting (gevent_accept.py): instead of every worker waking for every
  connection (stock ``StreamServer``), the holder of a cross-process mutex
  (``TURBOWORKERS_ACCEPT``, default ``sem``) waits for the listeners, accepts
  up to 16 connections, lets the mutex go and gives each connection a
  greenlet of a pool of ``worker_connections``. A worker whose pool is more
  than 7/8 full sits out until it drains. With one worker there is no mutex;
- connections: requests are read by the Cython parser over the gevent socket
  (keep-alive and pipelining, each head within ``keepalive`` seconds as
  stock gevent times them) and answered by the Cython response writer. In
  pure mode, or for settings the parser leaves to gunicorn (and for HTTP/2),
  each connection goes to gunicorn's own ``AsyncWorker.handle``.

This module imports gevent: ``import turboworkers`` does not, and choosing
this worker without gevent installed stops start-up with one line.
"""
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
from turboworkers.gevent_accept import HubAcceptor, EpollThreadAcceptor, TurnAcceptor

# The event loop's tick while requests are in flight (see _tick.pyx): libev
# waits in whole milliseconds, at least one, so without it a timer falls due
# up to 2 ms before the loop wakes. 0.1 ms bounds that, for up to 10,000 cheap
# wake-ups a second while the loop waits with requests in flight. With 500
# connections sleeping 10 ms each, 6 paired probes against a 0.2 ms tick gave
# from -6% to +11% requests per second (median +6%): within this machine's
# noise, but not worse.
TIMER_TICK = 0.0001


class _KeepaliveExpired(BaseException):
    """Thrown into a connection's greenlet when its next request head did
    not come within ``keepalive`` seconds (a BaseException, as
    gevent.Timeout is)."""


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
        if not threaded:
            kind = HubAcceptor
        elif self.accept_engine == "epoll":
            kind = EpollThreadAcceptor
        else:
            kind = TurnAcceptor
        try:
            acceptor = kind(self, self.accept_engine, self.sockets, self.pool, wait, self.log)
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
    # whoever sets it, the worker lets the mutex go (or leaves the line of
    # epoll waiters) at once, before the response that ends its life reaches
    # its client (who may connect again at once).
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
