"""The example gunicorn config files start gunicorn with the worker they name.

Each ``examples/gunicorn.<kind>.conf.py`` is the config file (``-c``) of a
real gunicorn run; the test only adds a loopback listener and two workers on
the command line (which takes precedence over the file's ``bind`` and
``workers``). The worker class, the settings gunicorn read from the file and
the access log it asks for must show in the run.
"""
import os
import re

import pytest

import deploy
import servers

EXAMPLES = os.path.join(os.path.dirname(servers.TESTS_DIR), "examples")


def _settings(path):
    namespace = {}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_example_config_starts_its_worker(gunicorn_server, kind):
    path = os.path.join(EXAMPLES, "gunicorn.%s.conf.py" % kind)
    settings = _settings(path)
    assert settings["worker_class"] == deploy.KINDS[kind][1]
    with open(path) as f:
        text = f.read()
    srv = gunicorn_server(name="example-" + kind, worker_class=settings["worker_class"],
                          workers=2, config=text)
    resp = srv.get("/_/hello")
    assert resp.status == 200 and resp.body == b"Hello, world!\n"
    log = srv.log_text()
    assert "Using worker: %s" % settings["worker_class"] in log
    # gunicorn's dump of its configuration (log level debug) shows what it read
    for name in ("timeout", "graceful_timeout", "max_requests", "max_requests_jitter",
                 "worker_tmp_dir", "threads", "worker_connections", "keepalive"):
        if name in settings:
            assert re.search(r"\n  %s: %s\n" % (name, re.escape(str(settings[name]))), log), name
    assert "forwarded_allow_ips: ['127.0.0.1']" in log
    # accesslog = "-": the access line on stdout, in the log here (written
    # once the response is out: the client may read it first)
    srv.wait_for_log(r'"GET /_/hello HTTP/1.1" 200 14 ')
    assert srv.stop() == 0
