"""An I/O-bound endpoint: 10 ms of waiting, then a small body.

``time.sleep`` releases the GIL in thread workers; gevent workers monkey-patch
it (gunicorn patches before it imports the application), so there it yields
to the other greenlets. This is how a blocking database call behaves.
"""
import time

from bench.apps import worker_pid

DELAY = 0.010
BODY = b"Hello, World!"
_LENGTH = str(len(BODY))


def app(environ, start_response):
    time.sleep(DELAY)
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", _LENGTH),
        ("X-Worker-Pid", worker_pid()),
    ])
    return [BODY]
