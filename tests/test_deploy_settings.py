"""Every gunicorn setting that touches a worker: what each turbo worker does with it.

``ROWS`` is the table of the README ("gunicorn settings and the turbo
workers"): for each setting and worker, one of

* ``honoured``: the turbo worker does what the stock worker does with it
  (proved against the stock worker under the same settings, where a stock
  worker is started: groups ``A`` and ``W``);
* ``gunicorn``: the worker keeps its accept strategy and serves the
  connection with gunicorn's own HTTP code (proved by behaviour only gunicorn's
  code has: the Cython parser refuses what these settings let through);
* ``refused``: start-up stops with one line naming the setting;
* ``unused``: the stock worker does not use it either (proved: same answers).

Servers are grouped by configuration (tests/settings_servers.py) and
started side by side once per worker kind. The probes of one kind run in
``ROWS`` order; the last one stops the ``W`` servers.
"""
import os
import re
import signal
import socket
import ssl
import struct
import threading
import time

import pytest

import deploy
import servers
from settings_servers import H, Kind, both, environ_of, in_app_at_once, raw, status_of, wait_until


@pytest.fixture(scope="module")
def kinds(module_gunicorn_server, tmp_path_factory):
    """``kinds(kind)``: the servers of ``kind``; the previous kind's are stopped."""
    base = tmp_path_factory.mktemp("settings")
    current = {}

    def get(kind):
        if kind not in current:
            for old in current.values():
                for srv in old.servers.values():
                    srv.terminate()
                old.close()
            current.clear()
            current[kind] = Kind(module_gunicorn_server, str(base / kind), kind)
        return current[kind]
    yield get
    for k in current.values():
        k.close()


# -- the probes -------------------------------------------------------------------

def p_workers(k):
    srv = k.servers["F", "turbo"]
    assert len(srv.worker_pids()) == 2


def p_threads(k):
    for side in ("stock", "turbo"):
        together, results = in_app_at_once(k.servers["W", side], 2,
                                           os.path.join(k.workdir, "threads-" + side))
        assert results == [200, 200]
        # gevent runs them at once too (greenlets), whatever threads says
        assert together, side


def p_threads_refused(k):
    srv = servers.GunicornServer(os.path.join(k.workdir, "refused"), name="refused",
                                 worker_class=deploy.KINDS["sync"][1], args=["--threads", "2"])
    try:
        with pytest.raises(servers.ServerError) as info:
            srv.start()
    finally:
        srv.stop()
    assert "threads = 2" in str(info.value)


def p_worker_connections(k):
    """Two requests in the app, then a third: with room for two connections,
    the third enters the app only after one of the two left it."""
    for side in ("stock", "turbo"):
        srv = k.servers["W", side]
        d = os.path.join(k.workdir, "wc-" + side)
        os.makedirs(d, exist_ok=True)
        entered = [os.path.join(d, "in%d" % i) for i in range(2)]
        left = [os.path.join(d, "out%d" % i) for i in range(2)]
        third = os.path.join(d, "third")
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(srv.get(
            "/_/sleep?s=1.2&marker=%s&done=%s" % (entered[i], left[i]), timeout=30).status))
            for i in range(2)]
        for t in threads:
            t.start()
        if k.kind == "sync":
            # one request at a time anyway: worker_connections plays no part
            wait_until(lambda: any(os.path.exists(m) for m in entered), "a slow request")
        else:
            wait_until(lambda: all(os.path.exists(m) for m in entered), "both in the app")
        threads.append(threading.Thread(target=lambda: results.append(srv.get(
            "/_/sleep?s=0&marker=%s" % third, timeout=30).status)))
        threads[-1].start()
        wait_until(lambda: os.path.exists(third), "the third request")
        # written before the slow request's answer, so before its connection closed
        assert any(os.path.exists(m) for m in left), side
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200], (side, results)


def p_max_requests(k):
    srv = k.servers["F", "turbo"]
    counts = {}
    for _ in range(16):
        data = raw(srv, _proxy(b"GET /_/pid HTTP/1.1\r\n" + H + b"\r\n"))
        pid = int(data.partition(b"\r\n\r\n")[2])
        counts[pid] = counts.get(pid, 0) + 1
    # two workers, each recycled after 4 to 6 requests (max_requests plus
    # jitter); a stopping EpollThreadWorker also serves a connection already
    # waiting in the listen backlog
    limit = 6 + (k.kind == "thread")
    assert len(counts) >= 3 and max(counts.values()) <= limit, counts


def p_timeout(k):
    stopped = {}
    for side in ("stock", "turbo"):
        srv = k.servers["W", side]
        (pid,) = srv.worker_pids()
        # a stopped worker stops beating its heartbeat: killed after timeout
        os.kill(pid, signal.SIGSTOP)
        stopped[side] = pid
    try:
        for side, pid in stopped.items():
            k.servers["W", side].wait_for_log(r"WORKER TIMEOUT \(pid:%d\)" % pid, timeout=30)
    finally:
        for pid in stopped.values():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    for side, pid in stopped.items():
        srv = k.servers["W", side]
        wait_until(lambda: srv.worker_pids() and pid not in srv.worker_pids(), "replacement")
        assert srv.get("/_/hello", timeout=30).status == 200
        # a beating worker lives on: the probes before (idle gaps, 1.2 s in
        # the app) ended in no timeout; the only one is the stopped worker's
        assert srv.log_text().count("WORKER TIMEOUT") == 1, srv.log_tail()


def p_graceful_timeout(k):
    """SIGTERM with a 4 s request in the app and graceful_timeout = 1: cut, as stock."""
    results = {}
    marks = {}
    threads = []
    for side in ("stock", "turbo"):
        srv = k.servers["W", side]
        marks[side] = os.path.join(k.workdir, "graceful-" + side)

        def run(srv=srv, side=side):
            try:
                results[side] = srv.get("/_/sleep?s=4&marker=%s" % marks[side], timeout=30).status
            except Exception as e:
                results[side] = type(e).__name__
        threads.append(threading.Thread(target=run))
        threads[-1].start()
    wait_until(lambda: all(os.path.exists(m) for m in marks.values()), "in the app")
    for side in ("stock", "turbo"):
        k.servers["W", side].terminate()
    for t in threads:
        t.join(30)
    assert results["stock"] != 200 and results["turbo"] != 200, results
    for side in ("stock", "turbo"):
        assert k.servers["W", side].wait_exit(20) == 0


def p_keepalive(k):
    resp = both(k, "A", b"GET /_/hello HTTP/1.1\r\n" + H + b"\r\n")
    assert b"\r\nConnection: close\r\n" in resp


def p_limit_request_line(k):
    assert status_of(both(k, "A", b"GET /" + b"a" * 150 + b" HTTP/1.1\r\n" + H + b"\r\n")) == 414


def p_limit_request_fields(k):
    extra = b"".join(b"X-F%d: v\r\n" % i for i in range(10))
    assert status_of(both(k, "A", b"GET /x HTTP/1.1\r\n" + H + extra + b"\r\n")) == 431


def p_limit_request_field_size(k):
    data = b"GET /x HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 250 + b"\r\n\r\n"
    assert status_of(both(k, "A", data)) == 431


def p_forwarded_allow_ips(k):
    data = b"GET /x HTTP/1.1\r\n" + H + b"X-Test-Proto: https\r\n\r\n"
    env = environ_of(both(k, "A", data, listener=0))
    # from 127.0.0.1, not in forwarded_allow_ips: the scheme header is not trusted
    assert env["wsgi.url_scheme"] == "http"


def p_secure_scheme_headers(k):
    data = b"GET /x HTTP/1.1\r\n" + H + b"X-Test-Proto: https\r\n\r\n"
    assert environ_of(both(k, "A", data, listener=1))["wsgi.url_scheme"] == "https"


def p_forwarder_headers(k):
    # a name with "_" is dropped (header_map) unless a trusted forwarder may set it
    data = b"GET /x HTTP/1.1\r\n" + H + b"REMOTE_USER: bob\r\n\r\n"
    assert environ_of(both(k, "A", data, listener=1))["HTTP_REMOTE_USER"] == "bob"
    assert "HTTP_REMOTE_USER" not in environ_of(both(k, "A", data, listener=0))


def p_header_map(k):
    # "dangerous": a name with "_" is kept (the default drops it)
    env = environ_of(both(k, "W", b"GET /x HTTP/1.1\r\n" + H + b"X_Under: 1\r\n\r\n"))
    assert env["HTTP_X_UNDER"] == "1"


def p_casefold_http_method(k):
    assert environ_of(both(k, "A", b"get /x HTTP/1.1\r\n" + H + b"\r\n"))["REQUEST_METHOD"] == "GET"


def p_permit_unconventional_http_method(k):
    env = environ_of(both(k, "A", b"FOO#BAR /x HTTP/1.1\r\n" + H + b"\r\n"))
    assert env["REQUEST_METHOD"] == "FOO#BAR"


def p_permit_unconventional_http_version(k):
    env = environ_of(both(k, "A", b"GET /x HTTP/1.2\r\n" + H + b"\r\n"))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.2"


def p_sendfile(k):
    data = both(k, "A", b"GET /_/file?size=200000 HTTP/1.1\r\n" + H + b"\r\n")
    assert status_of(data) == 200 and len(data.partition(b"\r\n\r\n")[2]) == 200000


def p_worker_tmp_dir(k):
    for side, srv in zip(("stock", "turbo"), k.pair("A")):
        d = os.path.join(k.workdir, "a-" + side)
        pid = srv.worker_pids()[0]
        links = []
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                links.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
            except OSError:
                pass
        # the heartbeat file, unlinked at once, open in the worker
        assert any(link.startswith(d + "/") for link in links), (side, pid, links)


def _listening_sockets(port):
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                count += 1
    return count


def p_reuse_port(k):
    srv = k.servers["H", "turbo"]
    assert _listening_sockets(srv.port) == 2  # one per worker
    seen = {int(srv.get("/_/pid").body) for _ in range(8)}
    assert seen <= set(srv.worker_pids())
    if k.kind != "thread":
        # nobody shares a worker's listener: no accept mutex (which would hold
        # a connection until the turn of the worker whose listener has it)
        assert len(re.findall(r"turboworkers: accept engine none", srv.log_text())) == 2, \
            srv.log_tail()


def _hook_lines(k, side):
    with open(k.hooks[side]) as f:
        return f.read().splitlines()


def p_request_hooks(k):
    for srv in k.pair("A"):
        assert srv.get("/hooked?x=1").status == 200
    for side in ("stock", "turbo"):
        # post_request runs once the response is out: the client may be first
        wait_until(lambda: "post_request GET /hooked 200" in _hook_lines(k, side),
                   "post_request of " + side)
        assert "pre_request GET /hooked" in _hook_lines(k, side)


def p_worker_hooks(k):
    """post_fork, post_worker_init, worker_int (SIGINT), worker_abort (SIGABRT),
    worker_exit and child_exit: the same hooks run as under the stock worker."""
    for sig in (signal.SIGINT, signal.SIGABRT):
        for srv in k.pair("A"):
            pid = srv.worker_pids()[0]
            os.kill(pid, sig)
            wait_until(lambda: srv.worker_pids() and pid not in srv.worker_pids(), "respawn")
            assert srv.get("/_/hello", timeout=30).status == 200
    names = {}
    for side in ("stock", "turbo"):
        wait_until(lambda: {"worker_int", "worker_abort"} <= {
            line.split()[0] for line in _hook_lines(k, side)}, "hooks of " + side)
        names[side] = {line.split()[0] for line in _hook_lines(k, side)}
    assert names["turbo"] == names["stock"]
    assert {"post_fork", "post_worker_init", "worker_int", "worker_abort", "worker_exit",
            "child_exit"} <= names["turbo"]


def p_access_log(k):
    for srv in k.pair("A"):
        assert srv.get("/logged", headers={"X-Probe": "v1"}).status == 200
    lines = {}
    for side in ("stock", "turbo"):
        path = os.path.join(k.workdir, "a-" + side, "access.log")
        wait_until(lambda: os.path.exists(path) and "GET /logged" in open(path).read(), "log")
        lines[side] = [line for line in open(path).read().splitlines() if "/logged" in line]
    assert lines["turbo"] == lines["stock"] == ["GET /logged 200 v1"]


def p_statsd(k):
    while True:  # drain what came before
        try:
            k.statsd.recv(65536)
        except socket.timeout:
            break
    seen = set()
    for srv in k.pair("A"):
        assert srv.get("/_/hello").status == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {"gunicorn.requests", "gunicorn.request.duration",
                                               "gunicorn.request.status.200"} <= seen:
        try:
            for line in k.statsd.recv(65536).decode().splitlines():
                seen.add(line.split(":")[0])
        except socket.timeout:
            pass
    assert {"gunicorn.requests", "gunicorn.request.duration",
            "gunicorn.request.status.200"} <= seen, seen


def p_proxy_protocol(k):
    data = (b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\nGET /x HTTP/1.1\r\n" + H + b"\r\n")
    assert environ_of(raw(k.servers["F", "turbo"], data))["REMOTE_ADDR"] == "198.51.100.7"


def _proxy(data):
    return b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n" + data


def p_permit_obsolete_folding(k):
    data = _proxy(b"GET /x HTTP/1.1\r\n" + H + b"X-Fold: a\r\n b\r\n\r\n")
    # the Cython parser refuses obs-fold; gunicorn's joins the lines
    assert environ_of(raw(k.servers["F", "turbo"], data))["HTTP_X_FOLD"] == "a b"


def p_strip_header_spaces(k):
    data = _proxy(b"GET /x HTTP/1.1\r\n" + H + b"X-Space : v\r\n\r\n")
    assert environ_of(raw(k.servers["F", "turbo"], data))["HTTP_X_SPACE"] == "v"


def _uwsgi_packet(env):
    body = b"".join(struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
                    for key, value in ((a.encode(), b.encode()) for a, b in env.items()))
    return struct.pack("<BHB", 0, len(body), 0) + body


def p_uwsgi(k):
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/via-uwsgi", "QUERY_STRING": "",
           "SERVER_NAME": "example.com", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
           "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "example.com"}
    data = raw(k.servers["U", "turbo"], _uwsgi_packet(env))
    assert environ_of(data)["PATH_INFO"] == "/via-uwsgi"


# Requests on which gunicorn_h1c and gunicorn's Python parser have disagreed
# (which of them still do depends on the installed gunicorn_h1c).
_PARSER_SPLITS = [
    b"GET /x HTTP/1.1\nHost: example.com\n\n",       # bare LF
    b"GET  /x HTTP/1.1\r\nHost: example.com\r\n\r\n",  # doubled spaces
    b"GET /x  HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n b\r\n\r\n",  # obs-fold
]


def _gunicorn_accepts(data, http_parser):
    from gunicorn.http.parser import RequestParser
    import corpus
    cfg = corpus.make_cfg(http_parser=http_parser)
    try:
        next(RequestParser(cfg, iter([data]), ("127.0.0.1", 5000)))
    except Exception:
        return False
    return True


def p_http_parser(k):
    srv = k.servers["H", "turbo"]
    assert srv.get("/_/hello").status == 200
    if deploy.ACCELERATED:
        assert "gunicorn's HTTP parser (http_parser = fast)" in srv.log_text()
    # Where the installed gunicorn_h1c takes what the Python parser (and the
    # Cython one, which follows it) refuses, the server must take it too.
    split = [d for d in _PARSER_SPLITS
             if _gunicorn_accepts(d, "fast") and not _gunicorn_accepts(d, "python")]
    for data in split:
        got = raw(srv, data)
        assert status_of(got) == 200, (data, got[:300])


def p_http_protocols(k):
    srv = k.servers["H", "turbo"]
    assert srv.get("/_/hello").status == 200
    if k.kind != "gevent":
        assert "HTTP/2 is not supported by" in srv.log_text()


def _tls(k, **ctx_kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(k.cert)
    if "ciphers" in ctx_kw:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ctx_kw["ciphers"])
    if "client_cert" in ctx_kw:
        ctx.load_cert_chain(*ctx_kw["client_cert"])
    srv = k.servers["T", "turbo"]
    return srv.get("/_/hello", ssl_context=ctx, timeout=10).status


def p_certfile(k):
    if k.cert is None:
        pytest.skip(k.key)
    assert _tls(k) == 200


def p_cert_reqs(k):
    if k.cert is None:
        pytest.skip(k.key)
    # cert_reqs = CERT_OPTIONAL with ca_certs: a trusted client certificate is
    # taken, an untrusted one refused
    assert _tls(k, client_cert=(k.cert, k.key)) == 200
    other = os.path.join(k.workdir, "other")
    os.makedirs(other, exist_ok=True)
    other_cert, other_key = servers.make_self_signed_cert(other)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls(k, client_cert=(other_cert, other_key))


def p_ciphers(k):
    if k.cert is None:
        pytest.skip(k.key)
    # the certificate may have an EC or an RSA key: offer both signatures
    assert _tls(k, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256") == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _tls(k, ciphers="ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def p_ragged_eof(k):
    """A client that drops the TLS connection without close_notify: the worker
    carries on (suppress_ragged_eofs, do_handshake_on_connect as set)."""
    if k.cert is None:
        pytest.skip(k.key)
    srv = k.servers["T", "turbo"]
    s = srv.connect(ssl_context=servers.tls_client_context(k.cert))
    s.sendall(b"GET /x HTTP/1.1\r\n")
    s.close()
    assert _tls(k) == 200


# setting(s) -> (probe, {kind: claim}); order matters within a kind (W's last probe stops W)
ALL = dict.fromkeys(deploy.KIND_NAMES, "honoured")
GUNICORN = dict.fromkeys(deploy.KIND_NAMES, "gunicorn")
ROWS = [
    ("workers", p_workers, ALL),
    ("threads", p_threads, {"thread": "honoured", "gevent": "unused"}),
    ("threads (> 1)", p_threads_refused, {"sync": "refused"}),
    ("worker_connections", p_worker_connections,
     {"sync": "unused", "thread": "honoured", "gevent": "honoured"}),
    ("max_requests, max_requests_jitter", p_max_requests, ALL),
    ("keepalive", p_keepalive, {"sync": "unused", "thread": "honoured", "gevent": "honoured"}),
    ("limit_request_line", p_limit_request_line, ALL),
    ("limit_request_fields", p_limit_request_fields, ALL),
    ("limit_request_field_size", p_limit_request_field_size, ALL),
    ("forwarded_allow_ips", p_forwarded_allow_ips, ALL),
    ("secure_scheme_headers", p_secure_scheme_headers, ALL),
    ("forwarder_headers", p_forwarder_headers, ALL),
    ("header_map", p_header_map, ALL),
    ("casefold_http_method", p_casefold_http_method, ALL),
    ("permit_unconventional_http_method", p_permit_unconventional_http_method, ALL),
    ("permit_unconventional_http_version", p_permit_unconventional_http_version, ALL),
    ("sendfile", p_sendfile, ALL),
    ("worker_tmp_dir", p_worker_tmp_dir, ALL),
    ("reuse_port", p_reuse_port, ALL),
    ("pre_request, post_request", p_request_hooks, ALL),
    ("post_fork, post_worker_init, worker_int, worker_abort, worker_exit, child_exit",
     p_worker_hooks, ALL),
    ("accesslog, access_log_format", p_access_log, ALL),
    ("statsd_host", p_statsd, ALL),
    ("proxy_protocol, proxy_allow_ips", p_proxy_protocol, GUNICORN),
    ("permit_obsolete_folding", p_permit_obsolete_folding, GUNICORN),
    ("strip_header_spaces", p_strip_header_spaces, GUNICORN),
    ("protocol = uwsgi, uwsgi_allow_ips", p_uwsgi, GUNICORN),
    ("http_parser = python | fast", p_http_parser, GUNICORN),
    ("http_protocols (h2)", p_http_protocols,
     {"sync": "HTTP/1.1 only, warning", "thread": "HTTP/1.1 only, warning", "gevent": "gunicorn"}),
    ("certfile, keyfile", p_certfile, ALL),
    ("ca_certs, cert_reqs", p_cert_reqs, ALL),
    ("ciphers", p_ciphers, ALL),
    ("suppress_ragged_eofs, do_handshake_on_connect", p_ragged_eof, ALL),
    ("timeout", p_timeout, ALL),
    ("graceful_timeout", p_graceful_timeout, ALL),
]

CASES = [(kind, i) for kind in deploy.KIND_NAMES for i, row in enumerate(ROWS) if kind in row[2]]


@pytest.mark.parametrize("kind,row", CASES,
                         ids=["%s-%s" % (kind, ROWS[i][0].split(",")[0].split(" ")[0]
                                         + ("-refused" if "(> 1)" in ROWS[i][0] else ""))
                              for kind, i in CASES])
def test_setting(kinds, kind, row):
    setting, probe, claims = ROWS[row]
    probe(kinds(kind))


_README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
_README_COLUMNS = {"sync": 1, "thread": 2, "gevent": 3}
# a README cell, by the words it starts with, as a claim of ROWS
_README_CLAIMS = (("honoured", "honoured"), ("gunicorn's code", "gunicorn"),
                  ("refused", "refused"), ("unused", "unused"))


def _readme_settings_table():
    """{setting name: [cells]} of the README's table "gunicorn settings and
    the turbo workers"; a row names one or more settings in backquotes."""
    with open(_README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## gunicorn settings and the turbo workers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z0-9_]+)", cells[0]):
            table[name] = cells
    return table


def _claim_of(cell):
    for words, claim in _README_CLAIMS:
        if cell.startswith(words):
            return claim
    return cell


def test_readme_table_says_what_the_rows_prove():
    table = _readme_settings_table()
    for setting, _, claims in ROWS:
        name = re.match(r"[a-z0-9_]+", setting).group(0)
        assert name in table, "README has no row for %r" % setting
        for kind, claim in claims.items():
            cell = table[name][_README_COLUMNS[kind]]
            assert _claim_of(cell) == claim, (setting, kind, cell, claim)
