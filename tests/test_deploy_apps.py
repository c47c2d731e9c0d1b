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
import os

import pytest

import deploy
from deploy_visit import STATIC, check_visit, visit


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
