"""The app of the leak scenario: reads every request body, answers 404 for
unknown paths.

``/`` answers hello world; ``/upload`` reads ``wsgi.input`` to the end
(Content-Length or chunked) and answers with the number of bytes read; any
other path is a 404. Every answer has a Content-Length and X-Worker-Pid.
"""
from bench.apps import worker_pid

HELLO = b"Hello, World!"
NOT_FOUND = b"Not Found"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        status, body = "200 OK", HELLO
    elif path == "/upload":
        read = 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(8192)
            if not chunk:
                break
            read += len(chunk)
        status, body = "200 OK", b"read %d bytes" % read
    else:
        status, body = "404 Not Found", NOT_FOUND
    start_response(status, [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Worker-Pid", worker_pid()),
    ])
    return [body]
