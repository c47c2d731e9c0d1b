"""A Flask app and a Django project answer alike under each turbo worker and its stock counterpart.

Both frameworks are mounted in one WSGI app (``deploy_app:app``: ``/flask``,
``/django``). For each worker kind, the same visit (a session cookie set and
read back, a form POST, a multipart upload, a streaming response, a static
file through ``wsgi.file_wrapper``) is made on one client connection to
stock gunicorn and to the turbo worker. Every response must have the same
status, body and headers (``Date``/``Server`` masked, the signature of a
session cookie masked), and the client must have needed as many connections
on both (so keep-alive behaves the same).
"""
import hashlib
import json
import os

import pytest

import deploy

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "sample.txt")
UPLOAD = bytes(range(256)) * 800  # 200 KiB, every byte value
FORM = "name=Ada+Lovelace&lang=py&lang=c&note=caf%C3%A9"
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def visit(browser, prefix):
    """The requests of one visit, in order: ([(label, Response)], connections opened)."""
    body, ctype = deploy.multipart([("title", "report")], [("doc", "data.bin", UPLOAD)])
    steps = [
        ("index", "GET", "/", None, {}),
        ("session-set", "GET", "/session/set?value=turbo+%E2%9C%93", None, {}),
        ("session-get", "GET", "/session/get", None, {}),
        ("form", "POST", "/form", FORM, FORM_HEADERS),
        ("upload", "POST", "/upload", body, {"Content-Type": ctype}),
        ("stream", "GET", "/stream?n=200", None, {}),
        ("static", "GET", "/static/sample.txt", None, {}),
        ("static-head", "HEAD", "/static/sample.txt", None, {}),
        ("not-found", "GET", "/no/such/page", None, {}),
    ]
    try:
        out = [(label, browser.request(method, prefix + path, body, headers))
               for label, method, path, body, headers in steps]
    finally:
        browser.close()
    return out, browser.connects


def check_visit(results):
    """What the app must have answered, whichever server ran it."""
    by = dict(results)
    for label in ("index", "session-set", "session-get", "form", "upload", "stream", "static"):
        assert by[label].status == 200, (label, by[label].status, by[label].body[:300])
    assert json.loads(by["session-get"].body) == {"value": "turbo \u2713"}
    assert json.loads(by["form"].body)["form"] == {"name": ["Ada Lovelace"], "lang": ["py", "c"],
                                                   "note": ["caf\u00e9"]}
    upload = json.loads(by["upload"].body)
    assert upload["form"] == {"title": "report"}
    assert upload["files"]["doc"]["sha256"] == hashlib.sha256(UPLOAD).hexdigest()
    assert by["stream"].body == b"".join(b"line %d\n" % i for i in range(200))
    with open(STATIC, "rb") as f:
        assert by["static"].body == f.read()
    assert deploy.header(by["static"], "X-File-Wrapper") == ["yes"]
    assert by["static-head"].body == b""
    assert by["not-found"].status == 404


@pytest.mark.parametrize("framework", ["flask", "django"])
@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_framework_visit_same_as_stock(deploy_pairs, kind, framework):
    stock, turbo = deploy_pairs.get(kind)
    expected, stock_connects = visit(deploy.Browser.of(stock), "/" + framework)
    got, turbo_connects = visit(deploy.Browser.of(turbo), "/" + framework)
    check_visit(expected)
    check_visit(got)
    for (label, a), (_, b) in zip(expected, got):
        assert deploy.compare_key(a) == deploy.compare_key(b), (
            "%s %s: stock %s and %s differ\nstock: %r\nturbo: %r"
            % (framework, label, stock.worker_class, turbo.worker_class,
               deploy.compare_key(a)[:2], deploy.compare_key(b)[:2]))
    assert stock_connects == turbo_connects
    # the streaming responses were chunked, the static file had a length
    assert ("transfer-encoding", "chunked") in deploy.normal_headers(dict(got)["stream"].headers)
    assert ("content-length", str(os.path.getsize(STATIC))) in \
        deploy.normal_headers(dict(got)["static"].headers)
