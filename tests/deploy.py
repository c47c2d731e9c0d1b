"""The three turbo workers beside their stock counterparts, for the deployment tests.

``KINDS`` names the pairs: ``sync`` (``-k sync`` / SyncMutexWorker),
``thread`` (``-k gthread`` / EpollThreadWorker), ``gevent`` (``-k gevent`` /
GeventMutexWorker). The stock side always runs ``--http-parser python``
(gunicorn's reference parser). The turbo side runs with the default parser
setting in accelerated mode, so the Cython code answers; in pure mode it gets
``--http-parser python`` too, as tests/test_worker_differential.py explains.

``compare_key`` turns a response into what must be equal between the two
sides: status, body and headers, with the values that differ per process or
per second masked.
"""
import re
import threading
import time

from turboworkers import _ext

import servers

ACCELERATED = _ext.MODE == "accelerated"

# kind -> (stock -k, turbo -k, extra args for both)
KINDS = {
    "sync": ("sync", "turboworkers.SyncMutexWorker", []),
    "thread": ("gthread", "turboworkers.EpollThreadWorker", ["--threads", "4"]),
    "gevent": ("gevent", "turboworkers.GeventMutexWorker", []),
}
KIND_NAMES = sorted(KINDS)
TURBO_CLASSES = [KINDS[k][1] for k in KIND_NAMES]
# short stops: the graceful waits of a test's teardown are bounded by these
COMMON_ARGS = ["--timeout", "20", "--graceful-timeout", "5"]


def stock_args(kind):
    return COMMON_ARGS + KINDS[kind][2] + ["--http-parser", "python"]


def turbo_args(kind):
    return COMMON_ARGS + KINDS[kind][2] + ([] if ACCELERATED else ["--http-parser", "python"])


def start_pair(factory, kind, app="deploy_app:app", listeners=("tcp",), args=(), config="",
               name=None):
    """Start the stock and the turbo server of ``kind`` side by side: (stock, turbo)."""
    stock_k, turbo_k, _ = KINDS[kind]
    name = name or kind
    stock = factory(name="stock-" + name, worker_class=stock_k, app=app, listeners=listeners,
                    args=stock_args(kind) + list(args), config=config, wait=False)
    turbo = factory(name="turbo-" + name, worker_class=turbo_k, app=app, listeners=listeners,
                    args=turbo_args(kind) + list(args), config=config, wait=False)
    stock.wait_ready()
    turbo.wait_ready()
    return stock, turbo


# -- comparing responses ------------------------------------------------------

# values that differ from one process, second or signature to the next
_MASKED_HEADERS = {"date", "server"}
# a signed session cookie carries a timestamp: its value is masked, its
# attributes (Path, HttpOnly, SameSite, ...) are compared
_SESSION_COOKIE = re.compile(r"^(session|sessionid)=[^;]*")


def normal_headers(headers):
    out = []
    for name, value in headers:
        low = name.lower()
        if low in _MASKED_HEADERS:
            value = "<masked>"
        elif low == "set-cookie":
            value = _SESSION_COOKIE.sub(r"\1=<signed>", value.strip())
        out.append((low, value))
    return out


header = servers.header


def compare_key(resp):
    return (resp.status, normal_headers(resp.headers), resp.body)


# -- a client that counts its connections ---------------------------------------

class Browser:
    """An ``http.client`` connection that reconnects when the server closed,
    keeps cookies by name, and counts the connections it opened.

    ``connect`` opens a socket to the server (a ``GunicornServer.connect``,
    an nginx's), ``host`` is the Host header.
    """

    def __init__(self, connect, host, timeout=20.0):
        self.connects = 0
        self.cookies = {}
        self._connect = connect
        self._conn = servers._Connection(self._open, host, timeout)

    @classmethod
    def of(cls, srv, listener=0, ssl_context=None, timeout=20.0):
        return cls(lambda: srv.connect(listener, timeout, ssl_context),
                   srv.listeners[listener].host_header, timeout)

    def _open(self):
        self.connects += 1
        return self._connect()

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join("%s=%s" % kv for kv in sorted(self.cookies.items()))
        self._conn.request(method, path, body=body, headers=headers)
        resp = self._conn.getresponse()
        data = resp.read()
        result = servers.Response(resp.status, resp.reason, resp.version, resp.getheaders(), data)
        for value in servers.header(result, "Set-Cookie"):
            name, _, rest = value.strip().partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        if resp.will_close:
            self._conn.close()
        return result

    def close(self):
        self._conn.close()


def multipart(fields, files, boundary="turboworkersBoundary7MA4YWxk"):
    """(body, content type) of a multipart/form-data body."""
    parts = []
    for name, value in fields:
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                     % (boundary.encode(), name.encode(), value.encode()))
    for name, filename, data in files:
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                     b"Content-Type: application/octet-stream\r\n\r\n%s\r\n"
                     % (boundary.encode(), name.encode(), filename.encode(), data))
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return body, "multipart/form-data; boundary=" + boundary


# -- load ---------------------------------------------------------------------

class Load:
    """Client threads sending requests, each on a new connection, until stopped.

    Bounded: each thread stops after ``max_requests`` requests or at
    ``max_seconds``, whichever comes first. ``failures`` holds every request
    that did not get a 200 (the exception or status), ``pids`` the worker
    pids that answered ``/_/pid``.
    """

    def __init__(self, connect, host, threads=4, max_requests=3000, max_seconds=90.0,
                 path="/_/pid"):
        self.connect = connect
        self.host = host
        self.path = path
        self.failures = []
        self.pids = []
        self.count = 0
        self.phase = "start"  # set by the test: each failure is recorded with it
        self._stop = threading.Event()
        self._max = max_requests
        self._deadline = time.monotonic() + max_seconds
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        for _ in range(self._max):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            try:
                resp = servers.request(self.connect, self.host, "GET", self.path, timeout=30.0)
                with self._lock:
                    self.count += 1
                    if resp.status != 200:
                        self.failures.append("%s: status %d" % (self.phase, resp.status))
                    else:
                        self.pids.append(int(resp.body))
            except Exception as e:  # every kind of failure counts
                with self._lock:
                    self.failures.append("%s: %r" % (self.phase, e))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def wait_for(self, count, timeout=30.0):
        """Until ``count`` more requests were answered (bounded)."""
        target = self.count + count
        deadline = time.monotonic() + timeout
        while self.count < target and time.monotonic() < deadline and self.running():
            time.sleep(0.01)
        assert self.count >= target, "the load made no progress: %d of %d" % (self.count, target)

    def running(self):
        return any(t.is_alive() for t in self._threads)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(40)

    def __exit__(self, *exc):
        self.stop()
