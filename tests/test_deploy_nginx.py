"""Each turbo worker behind nginx answers as its stock counterpart behind the same nginx.

One nginx (``examples/nginx.conf`` rendered by tests/nginx.py: buffering
reverse proxy, upstream keep-alive, ``X-Forwarded-For`` and
``X-Forwarded-Proto``) proxies to every server of the shared deployment
pairs, on their TCP and their unix listener, each under its own prefix, and
to the three turbo servers together as one upstream. nginx listens on
127.0.0.1 in plain HTTP and in TLS (it terminates TLS; gunicorn sees plain
HTTP with ``X-Forwarded-Proto: https``).
"""
import json

import pytest

import deploy
import nginx
import servers
from deploy_visit import check_visit, visit

if nginx.binary() is None:
    pytest.skip("nginx is not installed (make build installs it with apt-get when run as root)",
                allow_module_level=True)

TRANSPORTS = {"tcp": 0, "unix": 1}  # listener index in the shared pairs


def backend(side, kind, transport):
    return "%s_%s_%s" % (side, kind, transport)


@pytest.fixture(scope="module")
def proxy(deploy_pairs, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("nginx"))
    cert, key = servers.make_self_signed_cert(workdir)
    if cert is None:
        pytest.skip(key)
    upstreams = {}
    for kind in deploy.KIND_NAMES:
        for side, srv in zip(("stock", "turbo"), deploy_pairs.get(kind)):
            for transport, index in TRANSPORTS.items():
                # gunicorn's bind syntax is nginx's: unix:/path or host:port
                upstreams[backend(side, kind, transport)] = [srv.listeners[index].bind]
    # several gunicorn instances behind one upstream: the three turbo servers
    turbo = {kind: deploy_pairs.get(kind)[1] for kind in deploy.KIND_NAMES}
    upstreams["several"] = [turbo["sync"].listeners[1].bind, turbo["thread"].listeners[0].bind,
                            turbo["gevent"].listeners[0].bind]
    for attempt in range(3):
        port, ssl_port = servers.free_port(), servers.free_port()
        proc = nginx.Nginx(workdir, nginx.render(workdir, port, ssl_port, cert, key, upstreams),
                           port, ssl_port)
        ok, output = proc.check()
        assert ok, output
        try:
            proc.start()
            break
        except RuntimeError:
            if "Address already in use" not in proc.log_tail() or attempt == 2:
                raise
    tls = servers.tls_client_context(cert)
    try:
        yield proc, tls, turbo
    finally:
        proc.stop()


def _browser(proxy_, tls=False):
    proc, ctx, _ = proxy_
    return deploy.Browser(lambda: proc.connect(ctx if tls else None), "127.0.0.1")


@pytest.mark.parametrize("framework", ["flask", "django"])
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_visit_through_nginx_same_as_stock(proxy, kind, transport, framework):
    results = {}
    for side in ("stock", "turbo"):
        results[side] = visit(_browser(proxy), "/%s/%s" % (backend(side, kind, transport),
                                                           framework))[0]
        check_visit(results[side])
    for (label, a), (_, b) in zip(results["stock"], results["turbo"]):
        assert deploy.compare_key(a) == deploy.compare_key(b), (
            "%s behind nginx (%s): %s differs\nstock: %r\nturbo: %r"
            % (kind, transport, label, deploy.compare_key(a)[:2], deploy.compare_key(b)[:2]))


def _environ_twice(proxy_, prefix, tls):
    browser = _browser(proxy_, tls)
    try:
        out = []
        for _ in range(2):
            resp = browser.request("GET", prefix + "/django/environ",
                                   headers={"X-Forwarded-For": "203.0.113.7"})
            assert resp.status == 200, resp
            out.append(json.loads(resp.body))
        return out
    finally:
        browser.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_forwarded_headers_same_as_stock(proxy, kind, transport, tls):
    """REMOTE_ADDR, wsgi.url_scheme and the forwarded headers as stock gunicorn sees them.

    gunicorn trusts ``X-Forwarded-Proto`` from 127.0.0.1 (the default
    ``forwarded_allow_ips``) and from any unix socket peer: behind nginx's
    TLS listener the scheme is https. Two requests in a row show whether
    nginx kept its upstream connection (same ``REMOTE_PORT``): the turbo
    worker keeps it exactly when the stock worker does.
    """
    seen = {}
    for side in ("stock", "turbo"):
        seen[side] = _environ_twice(proxy, "/" + backend(side, kind, transport), tls)
    first = {k: v for k, v in seen["turbo"][0].items() if k != "REMOTE_PORT"}
    assert first == {k: v for k, v in seen["stock"][0].items() if k != "REMOTE_PORT"}
    assert first["wsgi.url_scheme"] == ("https" if tls else "http")
    assert first["HTTP_X_FORWARDED_FOR"] == "203.0.113.7, 127.0.0.1"
    assert first["HTTP_X_FORWARDED_PROTO"] == ("https" if tls else "http")
    if transport == "tcp":
        assert first["REMOTE_ADDR"] == "127.0.0.1"
        reused = {side: s[0]["REMOTE_PORT"] == s[1]["REMOTE_PORT"] for side, s in seen.items()}
        assert reused["turbo"] == reused["stock"], seen
        # a sync worker closes after each response; the others keep the connection
        assert reused["turbo"] == (kind != "sync"), seen


def test_several_instances_behind_one_upstream(proxy):
    """The three turbo servers as one upstream: concurrent clients, every instance serves."""
    proc, _, turbo = proxy
    pids_of = {kind: set(srv.worker_pids()) for kind, srv in turbo.items()}
    load = deploy.Load(lambda: proc.connect(), "127.0.0.1", threads=4, max_requests=15,
                       max_seconds=60.0, path="/several/_/pid")
    with load:
        for t in load._threads:
            t.join(60)
    assert not load.failures, load.failures[:10]
    assert load.count == 60
    for kind, pids in pids_of.items():
        assert pids & set(load.pids), "no request reached the %s instance" % kind
    assert set(load.pids) <= set().union(*pids_of.values())


def test_rendered_config_keeps_the_example_proxy_settings(proxy):
    """The example's proxy directives are the ones the tests ran."""
    proc = proxy[0]
    with open(proc.conf) as f:
        text = f.read()
    for line in ("proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_buffering on;",
                 "keepalive 8;"):
        assert line in text, line
