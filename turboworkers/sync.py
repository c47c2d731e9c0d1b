"""SyncMutexWorker: gunicorn's sync worker, herd-free and on the Cython HTTP core.

One request at a time, the connection closed after each response, exactly as
``-k sync``. Only an idle worker waits for a connection, and the kernel wakes
one of them per connection (see ``turboworkers.accept``).
"""
import ssl
import sys
from datetime import datetime

from gunicorn import http, sock, util
from gunicorn.workers.sync import SyncWorker

from turboworkers import accept as _accept
from turboworkers import glue


class SyncMutexWorker(SyncWorker):
    """Drop-in for ``-k sync``: ``gunicorn -k turboworkers.SyncMutexWorker app:app``."""

    @staticmethod
    def default_accept(listeners):
        # One listener: the kernel's own queue of sleepers in accept() wakes
        # one worker per connection, oldest first. Several: the semaphore.
        return "queue" if len(listeners) == 1 else "sem"

    @classmethod
    def setup(cls):
        # Runs in the master, at start and on every HUP (and whenever gunicorn
        # reads the setting): what the accept engine shares between workers
        # is made once and then kept.
        engine = glue.accept_engine_at_setup(cls.__name__)
        _accept.Shared.ensure_for(engine)

    def init_process(self):
        glue.check_settings_at_boot(self.cfg, self.__class__.__name__)
        self.accept_engine = glue.accept_engine_at_boot(
            self.__class__.__name__, self.sockets, self.default_accept,
            reuse_port=self.cfg.reuse_port)
        super().init_process()

    def run(self):
        self.http = glue.HttpCore(self.cfg, self.log, multithread=False)
        if 'h2' in self.cfg.http_protocols:
            self.log.warning("HTTP/2 is not supported by %s; serving HTTP/1.1 only.",
                             self.__class__.__name__)
        self._ssl_context = sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        # read once: each gunicorn setting lookup is a few Python calls
        self._pre_request = self.cfg.pre_request
        self._post_request = self.cfg.post_request
        self._access_log = glue.access_log_wanted(self.log)
        self._listener_names = {}
        wait = _accept.idle_wait(self.timeout)
        acceptor = _accept.make_engine(self.accept_engine, self.sockets, wait,
                                       self.notify, self.PIPE[0],
                                       stopping=lambda: not self.alive)
        self.log.debug("turboworkers: accept engine %s", self.accept_engine)
        try:
            beat = _accept.Heartbeat(self.notify, wait)
            while self.alive:
                beat()
                conn = acceptor.accept()
                if conn is not None:
                    self.handle(*conn)
                elif not self.is_parent_alive():
                    return
        finally:
            acceptor.close()

    def handle_usr1(self, sig, frame):
        super().handle_usr1(sig, frame)
        http_core = getattr(self, "http", None)
        if http_core is not None:
            http_core.logs_reopened()

    def listener_name(self, listener):
        name = self._listener_names.get(listener)
        if name is None:
            name = self._listener_names[listener] = listener.getsockname()
        return name

    def handle(self, listener, client, addr):
        if not self.http.accelerated:
            return super().handle(listener, client, addr)
        req = None
        parser = None
        try:
            if self._ssl_context is not None:
                client = self._ssl_context.wrap_socket(
                    client, server_side=True,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                    do_handshake_on_connect=self.cfg.do_handshake_on_connect)
            parser = self.http.parser(client, addr, self.listener_name(listener))
            environ = parser.next_request()
            if environ is None:
                return
            req = parser.req
            self.handle_environ(listener, req, client, addr, environ)
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except ssl.SSLError as e:
            if e.args[0] == ssl.SSL_ERROR_EOF:
                self.log.debug("ssl connection closed")
                client.close()
            else:
                self.log.debug("Error processing SSL request.")
                self.handle_error(req, client, addr, e)
        except OSError as e:
            glue.log_socket_error(self.log, e)
        except BaseException as e:
            self.handle_error(req, client, addr, e)
        finally:
            if parser is not None:
                rested = parser.at_rest()
                parser.close()
                if rested and self._ssl_context is None and _accept.close_if_drained(client):
                    return
            util.close_graceful(client)

    def handle_environ(self, listener, req, client, addr, environ):
        """Call the app for one parsed request and write its response."""
        resp = None
        try:
            self._pre_request(self, req)
            request_start = datetime.now() if self._access_log else None
            resp = self.http.response(client, req)
            environ["wsgi.early_hints"] = resp.send_early_hints
            # like gunicorn's sync worker: one request per connection
            resp.force_close()
            self.nr += 1
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            glue.run_app(self, req, environ, resp, request_start)
        except OSError:
            util.reraise(*sys.exc_info())
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # Headers are out: a 500 now would corrupt the response.
                self.log.exception("Error handling request")
                util.close_graceful(client)
                raise StopIteration()
            raise
        finally:
            try:
                self._post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
