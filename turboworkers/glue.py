"""What every turbo worker shares: the choice of HTTP code, the start checks,
and calling the application."""
import errno
import logging
import sys
from datetime import datetime

from gunicorn.glogging import Logger
from gunicorn.http.wsgi import FileWrapper

from turboworkers import _ext

# gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR: a worker that exits with it
# makes the master stop ("Worker failed to boot.") instead of booting another.
WORKER_BOOT_ERROR = 3


class ConfigError(SystemExit):
    """A setting this worker cannot honour: start-up stops with one line."""

    def __init__(self, worker, message):
        super().__init__("Error: %s: %s" % (worker, message))


def check_settings(cfg, worker):
    """Refuse, with one clear line, the settings a worker cannot honour."""
    if worker == "SyncMutexWorker" and cfg.threads > 1:
        raise ConfigError(worker, "threads = %d, but this worker serves one request at a "
                          "time; use threads = 1 (as with -k sync, whose threads > 1 "
                          "means gthread)" % cfg.threads)


def accept_engine_at_setup(worker):
    """The TURBOWORKERS_ACCEPT engine, read in the master; a bad value stops
    start-up with one line."""
    from turboworkers import accept
    try:
        accept.rotate_from_env()
        return accept.engine_from_env()
    except accept.AcceptConfigError as e:
        raise ConfigError(worker, str(e))


def accept_engine_at_boot(worker, listeners, auto, reuse_port=False):
    """The engine a booting worker uses with its listeners."""
    from turboworkers import accept
    try:
        name = accept.engine_from_env()
        if name == "auto" and reuse_port:
            # gunicorn binds listeners of its own in each worker with
            # reuse_port: no other process waits on them, so there is no herd
            # to prevent, and a mutex would only hold a connection the kernel
            # gave to this worker until this worker's turn came (up to a
            # second)
            name = "none"
        name = accept.resolve(name, listeners, auto)
        accept.check_boot(name)
        return name
    except accept.AcceptConfigError as e:
        _refuse(ConfigError(worker, str(e)))


def _refuse(error):
    print(error.code, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(WORKER_BOOT_ERROR)


def check_settings_at_boot(cfg, worker):
    """``check_settings`` in a booting worker process.

    A refusal prints its one line and exits with WORKER_BOOT_ERROR, so the
    master stops; a plain ``SystemExit`` (exit code 1) would have the master
    boot a new worker, refused again, for ever.
    """
    try:
        check_settings(cfg, worker)
    except ConfigError as e:
        _refuse(e)


class HttpCore:
    """The parser and response writer a worker uses for this deployment.

    The Cython parser and writer when they are built and the settings allow
    them; otherwise gunicorn's own HTTP code (``accelerated`` is False and
    ``reason`` says why).
    """

    def __init__(self, cfg, log, multithread):
        self.cfg = cfg
        self.accelerated, self.reason = self._choose(cfg)
        if self.accelerated:
            self._parser_mod = _ext.http_parser
            self._response_mod = _ext.response
            self.config = _ext.http_parser.ParserConfig(cfg, multithread=multithread)
            self._sendfile = cfg.sendfile is not False
            self._is_ssl = bool(cfg.is_ssl)
            self._uwsgi = getattr(cfg, "protocol", "http") == "uwsgi"
            log.debug("turboworkers: Cython HTTP parser and response writer")
        else:
            log.info("turboworkers: gunicorn's HTTP parser (%s)", self.reason)

    @staticmethod
    def _choose(cfg):
        if _ext.MODE != "accelerated":
            if _ext.IMPORT_ERROR is not None:
                return False, "extensions not importable: %s" % _ext.IMPORT_ERROR
            return False, "TURBOWORKERS_NO_EXTENSIONS is set"
        parser_setting = getattr(cfg, "http_parser", "auto")
        if parser_setting != "auto":
            return False, "http_parser = %s" % parser_setting
        ok, why = _ext.http_parser.supports_config(cfg)
        if not ok:
            return False, "%s is done by gunicorn's parser" % why
        return True, None

    def logs_reopened(self):
        if self.accelerated:
            self.config.renew_error_stream()

    def parser(self, client, addr, server_name, source=None):
        """The parser of one connection; it receives from ``source`` (by
        default the client socket itself)."""
        return self._parser_mod.RequestParser(self.config, client if source is None else source,
                                              addr, server_name, client)

    def response(self, client, req):
        return self._response_mod.Response(client, req.version, req.method, req.should_close(),
                                           **self.response_options())

    def response_options(self):
        """The keyword arguments of every Response of this deployment."""
        return {"cfg_sendfile": self._sendfile, "is_ssl": self._is_ssl, "uwsgi": self._uwsgi}


def request_hooks(cfg, log):
    """``(pre_request, post_request)`` to call for each request; None for a
    hook that would do nothing.

    gunicorn's default ``post_request`` is empty, and its default
    ``pre_request`` only writes a debug line: with gunicorn's own logger
    below debug level (a worker's level is set once, at start), it writes
    nothing.
    """
    from gunicorn.config import PostRequest, PreRequest
    pre, post = cfg.pre_request, cfg.post_request
    if (pre is PreRequest.default and type(log).debug is Logger.debug
            and not log.error_log.isEnabledFor(logging.DEBUG)):
        pre = None
    if post is PostRequest.default:
        post = None
    return pre, post


def access_log_wanted(log):
    """Whether log.access() must be called for each request.

    gunicorn's Logger.access() does nothing without an access log, but another
    logger class (statsd's, a user's) may act on every request.
    """
    return log.access_log_enabled or type(log).access is not Logger.access


def run_app(worker, req, environ, resp, request_start):
    """Call the application and write what it returns, as gunicorn's workers
    do; the access log is written (when ``request_start`` is set) and the
    iterable's close() called, also after an error."""
    write_answer(worker, req, environ, resp, worker.wsgi(environ, resp.start_response),
                 request_start)


def write_answer(worker, req, environ, resp, respiter, request_start):
    """Write what the application returned (see ``run_app``)."""
    try:
        if isinstance(respiter, FileWrapper):
            resp.write_file(respiter)
            # ends a chunked body (a file without Content-Length)
            resp.close()
        elif type(respiter) is list or type(respiter) is tuple:
            # everything at hand: the head and the body in one send
            resp.write_list(respiter)
        else:
            for item in respiter:
                resp.write(item)
            resp.close()
    finally:
        if request_start is not None:
            worker.log.access(resp, req, environ, datetime.now() - request_start)
        if hasattr(respiter, "close"):
            respiter.close()


def log_socket_error(log, e, epipe_message="Ignoring EPIPE"):
    """What gunicorn's workers log for an OSError on a client connection:
    a broken or reset connection quietly, anything else with its traceback.
    (gthread words the EPIPE line differently: ``epipe_message``.)"""
    if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
        log.exception("Socket error processing request.")
    elif e.errno == errno.ECONNRESET:
        log.debug("Ignoring connection reset")
    elif e.errno == errno.ENOTCONN:
        log.debug("Ignoring socket not connected")
    else:
        log.debug(epipe_message)
