"""One visit of a browser to the Flask or the Django app of ``deploy_app``, and what it must get.

Used directly against gunicorn (tests/test_deploy_apps.py) and through nginx
(tests/test_deploy_nginx.py).
"""
import hashlib
import json
import os

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
