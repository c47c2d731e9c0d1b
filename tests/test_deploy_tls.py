"""TLS served by gunicorn itself (``certfile``/``keyfile``), each turbo worker beside its stock one.

Two real clients: curl (several URLs on one command line: curl reuses the
connection when the server keeps it) and Python's ``ssl`` under
``http.client``. For each worker kind, the turbo server must keep or close
connections exactly as the stock one does (a sync worker closes after each
response, the others keep the connection) and must receive a POST body
intact, under both clients.
"""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

import deploy
import servers

BODY = os.urandom(300000)
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def tls_servers(module_gunicorn_server, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tls"))
    cert, key = servers.make_self_signed_cert(workdir)
    if cert is None:
        pytest.skip(key)
    body_file = os.path.join(workdir, "body.bin")
    with open(body_file, "wb") as f:
        f.write(BODY)
    args = ["--certfile", cert, "--keyfile", key, "--keep-alive", "10"]
    started = {}
    for kind in deploy.KIND_NAMES:
        stock_k, turbo_k, _ = deploy.KINDS[kind]
        started[kind] = (
            module_gunicorn_server(name="tls-stock-" + kind, worker_class=stock_k, app="apps:app",
                                   args=deploy.stock_args(kind) + args, wait=False),
            module_gunicorn_server(name="tls-turbo-" + kind, worker_class=turbo_k, app="apps:app",
                                   args=deploy.turbo_args(kind) + args, wait=False))
    for pair in started.values():
        for srv in pair:
            srv.wait_ready()
    return started, cert, body_file


def _python_client(srv, cert):
    """Three GETs and a POST on one http.client connection: (results, connections opened)."""
    browser = deploy.Browser.of(srv, ssl_context=servers.tls_client_context(cert))
    try:
        out = []
        for i in range(3):
            resp = browser.request("GET", "/_/hello?i=%d" % i)
            out.append((resp.status, resp.body))
        resp = browser.request("POST", "/_/digest", BODY,
                               {"Content-Type": "application/octet-stream"})
        out.append((resp.status, json.loads(resp.body)))
        return out, browser.connects
    finally:
        browser.close()


def _curl(srv, cert, body_file):
    """Three GETs and a POST on one curl command: [(status, connections opened)], POST reply."""
    base = "https://127.0.0.1:%d" % srv.port
    out_file = body_file + ".%d.reply" % srv.port
    cmd = [CURL, "-sS", "--cacert", cert, "--max-time", "30",
           "-w", "%{http_code} %{num_connects}\\n"]
    for i in range(3):
        cmd += ["-o", "/dev/null", "%s/_/hello?i=%d" % (base, i)]
    # --next: the POST is a further transfer of the same curl run, so it may
    # reuse the connection; its options (the body) apply to it alone
    cmd += ["--next", "-sS", "--cacert", cert, "-w", "%{http_code} %{num_connects}\\n",
            "--data-binary", "@" + body_file, "-H", "Content-Type: application/octet-stream",
            "-o", out_file, base + "/_/digest"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    lines = [tuple(int(x) for x in line.split()) for line in proc.stdout.decode().splitlines()]
    with open(out_file) as f:
        return lines, json.load(f)


EXPECTED_DIGEST = {"length": len(BODY), "sha256": hashlib.sha256(BODY).hexdigest()}


@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_python_ssl_client(tls_servers, kind):
    started, cert, _ = tls_servers
    stock, turbo = started[kind]
    expected, stock_connects = _python_client(stock, cert)
    got, turbo_connects = _python_client(turbo, cert)
    assert got == expected
    assert got[-1] == (200, EXPECTED_DIGEST)
    assert [r[0] for r in got[:3]] == [200] * 3
    assert turbo_connects == stock_connects == (4 if kind == "sync" else 1)


@pytest.mark.skipif(CURL is None, reason="curl is not installed (make build installs it as root)")
@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_curl_client(tls_servers, kind):
    started, cert, body_file = tls_servers
    stock, turbo = started[kind]
    expected = _curl(stock, cert, body_file)
    got = _curl(turbo, cert, body_file)
    assert got == expected
    transfers, reply = got
    assert reply == EXPECTED_DIGEST
    assert [t[0] for t in transfers] == [200] * 4
    # one new connection per transfer with a sync worker, one in all otherwise
    connects = [t[1] for t in transfers]
    assert connects == ([1, 1, 1, 1] if kind == "sync" else [1, 0, 0, 0]), connects
