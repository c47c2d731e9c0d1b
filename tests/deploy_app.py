"""One WSGI entry point for the deployment tests (``deploy_app:app``).

``/flask/...`` is the Flask app (``flask_app``), ``/django/...`` the Django
project (``django_app``), anything else ``apps.app``. Each framework is
mounted the way a proxy mounts an app under a prefix: the prefix moves from
``PATH_INFO`` to ``SCRIPT_NAME``. One server then serves both frameworks,
which halves the gunicorn processes the tests start.

A response under ``/static/`` says in ``X-File-Wrapper`` whether the
framework returned the server's ``wsgi.file_wrapper`` object, so a test can
tell that the file went through it.
"""
import apps
import django_app
import flask_app

MOUNTS = (("/flask", flask_app.app), ("/django", django_app.application))


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    for prefix, target in MOUNTS:
        if path == prefix or path.startswith(prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
            if environ["PATH_INFO"].startswith("/static/"):
                return _mark_file_wrapper(target, environ, start_response)
            return target(environ, start_response)
    return apps.app(environ, start_response)


def _mark_file_wrapper(target, environ, start_response):
    # Flask and Django call start_response before they return the iterable,
    # so the head can wait until the iterable is known.
    head = []
    result = target(environ, lambda status, headers, exc_info=None: head.append((status, headers)))
    wrapper = environ.get("wsgi.file_wrapper")
    used = wrapper is not None and isinstance(result, wrapper)
    status, headers = head[-1]
    start_response(status, list(headers) + [("X-File-Wrapper", "yes" if used else "no")])
    return result
