"""The servers of tests/test_deploy_settings.py and the means to probe them.

Per worker kind, one ``Kind`` starts every group of servers side by side:
``A`` (parsing, forwarding, logging, hooks; stock and turbo, TCP and unix
listeners), ``W`` (concurrency, timeouts, header_map; stock and turbo), ``F``
(settings served by gunicorn's parser, max_requests; turbo, 2 workers), ``U``
(uwsgi; turbo), ``H`` (``http_parser = fast``, ``h2``, ``reuse_port``; turbo,
2 workers), ``T`` (TLS; turbo).
"""
import json
import os
import re
import socket
import threading
import time

import deploy
import servers

H = b"Host: example.com\r\n"


# -- configurations -------------------------------------------------------------

def config_a(workdir, statsd_port):
    hooks = os.path.join(workdir, "hooks.log")
    return hooks, "\n".join([
        "limit_request_line = 120",
        "limit_request_fields = 8",
        "limit_request_field_size = 200",
        # 127.0.0.1 is not a trusted proxy here; a unix socket peer always is
        "forwarded_allow_ips = '192.0.2.1'",
        "secure_scheme_headers = {'X-TEST-PROTO': 'https'}",
        "forwarder_headers = 'SCRIPT_NAME,REMOTE_USER'",
        "casefold_http_method = True",
        "permit_unconventional_http_method = True",
        "permit_unconventional_http_version = True",
        "keepalive = 0",
        "sendfile = False",
        "worker_tmp_dir = %r" % workdir,
        "accesslog = %r" % os.path.join(workdir, "access.log"),
        "access_log_format = '%(m)s %(U)s %(s)s %({x-probe}i)s'",
        "statsd_host = '127.0.0.1:%d'" % statsd_port,
        "import os",
        "def _hook(name, *extra):",
        "    with open(%r, 'a') as f:" % hooks,
        "        f.write(' '.join([name] + [str(e) for e in extra]) + '\\n')",
        "def pre_request(worker, req): _hook('pre_request', req.method, req.path)",
        "def post_request(worker, req, environ, resp): _hook('post_request', req.method, "
        "req.path, resp.status_code if resp is not None else None)",
        "def post_fork(server, worker): _hook('post_fork')",
        "def post_worker_init(worker): _hook('post_worker_init')",
        "def worker_int(worker): _hook('worker_int')",
        "def worker_abort(worker): _hook('worker_abort')",
        "def worker_exit(server, worker): _hook('worker_exit')",
        "def child_exit(server, worker): _hook('child_exit')",
        "",
    ])


CONFIG_W = "\n".join([
    "worker_connections = 2",
    "header_map = 'dangerous'",
    "timeout = 3",
    "graceful_timeout = 1",
    "",
])

CONFIG_F = "\n".join([
    "permit_obsolete_folding = True",
    "strip_header_spaces = True",
    "proxy_protocol = 'v1'",
    "proxy_allow_ips = '127.0.0.1'",
    "max_requests = 4",
    "max_requests_jitter = 2",
    "",
])

CONFIG_U = "protocol = 'uwsgi'\nuwsgi_allow_ips = '127.0.0.1'\n"
CONFIG_H = "\n".join([
    "http_parser = 'fast'",
    "http_protocols = 'h2,h1'",
    # gunicorn 27: each worker binds a listener of its own (SO_REUSEPORT), the
    # master none (TCP only: a unix socket cannot have SO_REUSEPORT)
    "reuse_port = True",
    "",
])


def config_t(cert, key):
    return "\n".join([
        "certfile = %r" % cert,
        "keyfile = %r" % key,
        "ca_certs = %r" % cert,
        "import ssl",
        "cert_reqs = ssl.CERT_OPTIONAL",
        # ECDHE key exchange with AES-GCM only (TLS 1.2)
        "ciphers = 'ECDHE+AESGCM'",
        "suppress_ragged_eofs = True",
        "do_handshake_on_connect = True",
        "",
    ])


class Kind:
    """The servers of one worker kind, all started side by side."""

    def __init__(self, factory, workdir, kind):
        self.kind = kind
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.statsd.bind(("127.0.0.1", 0))
        self.statsd.settimeout(0.2)
        stock_k, turbo_k, _ = deploy.KINDS[kind]
        self.servers = {}
        self.hooks = {}
        specs = []
        for side, cls, args in (("stock", stock_k, deploy.stock_args(kind)),
                                ("turbo", turbo_k, deploy.turbo_args(kind))):
            d = os.path.join(workdir, "a-" + side)
            os.makedirs(d, exist_ok=True)
            self.hooks[side], conf = config_a(d, self.statsd.getsockname()[1])
            specs.append((("A", side), dict(worker_class=cls, args=args, config=conf,
                                            listeners=("tcp", "unix"))))
            # timeout and graceful_timeout from the config file: the command
            # line's (deploy.COMMON_ARGS) would take precedence
            w_args = [a for a in args if a not in deploy.COMMON_ARGS]
            if kind == "gevent":
                w_args += ["--threads", "4"]  # unused by gevent workers, stock or turbo
            specs.append((("W", side), dict(worker_class=cls, args=w_args, config=CONFIG_W)))
        self.cert, self.key = servers.make_self_signed_cert(workdir)
        turbo_args = deploy.turbo_args(kind)
        specs += [(("F", "turbo"), dict(worker_class=turbo_k, args=turbo_args, config=CONFIG_F,
                                        workers=2)),
                  (("U", "turbo"), dict(worker_class=turbo_k, args=turbo_args, config=CONFIG_U)),
                  # its own parser setting: --http-parser python of pure mode left out
                  (("H", "turbo"), dict(worker_class=turbo_k, args=deploy.COMMON_ARGS
                                        + deploy.KINDS[kind][2], config=CONFIG_H, workers=2))]
        if self.cert is not None:
            specs.append((("T", "turbo"), dict(worker_class=turbo_k, args=turbo_args,
                                               config=config_t(self.cert, self.key))))
        for (group, side), kw in specs:
            self.servers[group, side] = factory(name="%s-%s-%s" % (kind, group, side),
                                                app="apps:app", wait=False, **kw)
        for srv in self.servers.values():
            srv.wait_ready()

    def pair(self, group):
        return self.servers[group, "stock"], self.servers[group, "turbo"]

    def close(self):
        self.statsd.close()


# -- helpers --------------------------------------------------------------------

_DATE = re.compile(rb"\r\n(Date|Server):[^\r\n]*")
_PORT = re.compile(rb'"SERVER_PORT": "\d*"')


def raw(srv, data, listener=0):
    ex = servers.raw_exchange(lambda: srv.connect(listener, timeout=20.0),
                              [("send", data), ("shut",)], timeout=20.0)
    return _PORT.sub(b'"SERVER_PORT": "P"', _DATE.sub(rb"\r\n\1: <masked>", ex.data))


def both(k, group, data, listener=0):
    """The same raw request to the stock and the turbo server: the turbo answer,
    after asserting the two are equal."""
    stock, turbo = k.pair(group)
    a, b = raw(stock, data, listener), raw(turbo, data, listener)
    assert a == b, "stock and turbo differ\nstock: %r\nturbo: %r" % (a[:800], b[:800])
    return b


def status_of(data):
    return int(data.split(b" ", 2)[1])


def environ_of(data):
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(data) == 200, data[:500]
    # the first JSON document: a uwsgi connection may carry a second answer
    return json.JSONDecoder().raw_decode(body.decode("latin-1"))[0]["environ"]


def wait_until(pred, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def in_app_at_once(srv, n, marker_dir, seconds=1.2):
    """``n`` sleeping requests at once: whether all were in the app together
    (each entered before any left), and the statuses."""
    os.makedirs(marker_dir, exist_ok=True)
    entered = [os.path.join(marker_dir, "in%d" % i) for i in range(n)]
    left = [os.path.join(marker_dir, "out%d" % i) for i in range(n)]
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(srv.get(
        "/_/sleep?s=%s&marker=%s&done=%s" % (seconds, entered[i], left[i]), timeout=30).status))
        for i in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: all(os.path.exists(m) for m in entered), "every request in the app")
    together = not any(os.path.exists(m) for m in left)
    for t in threads:
        t.join(30)
    return together, results
