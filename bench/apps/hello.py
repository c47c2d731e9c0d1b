"""Hello world: plain WSGI, a fixed 13-byte body with a Content-Length."""
from bench.apps import worker_pid

BODY = b"Hello, World!"
_LENGTH = str(len(BODY))


def app(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", _LENGTH),
        ("X-Worker-Pid", worker_pid()),
    ])
    return [BODY]
