"""A minimal Django project in one module for the end-to-end tests (``django_app:application``).

Settings are given in code (no settings module, no database): sessions live
in signed cookies, so two servers started from this module answer alike.
No CSRF middleware: its token is random per client and would make the
answers of two servers differ for reasons that have nothing to do with the
worker.
"""
import hashlib
import json
import os

import django
from django.conf import settings

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="turboworkers-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        # no Expires date in the cookie: it would differ by the second
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import (FileResponse, HttpResponse, JsonResponse,  # noqa: E402
                         StreamingHttpResponse)
from django.urls import path  # noqa: E402


def index(request):
    return HttpResponse("Hello from Django\n", content_type="text/plain")


def session_set(request):
    request.session["value"] = request.GET.get("value", "")
    return HttpResponse("stored\n", content_type="text/plain")


def session_get(request):
    return JsonResponse({"value": request.session.get("value")})


def form(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    return JsonResponse({"form": {k: request.POST.getlist(k) for k in sorted(request.POST)}})


def upload(request):
    """Form fields and files of a multipart body, each file by its digest."""
    if request.method != "POST":
        return HttpResponse(status=405)
    files = {name: {"filename": f.name, "size": f.size,
                    "sha256": hashlib.sha256(f.read()).hexdigest()}
             for name, f in request.FILES.items()}
    return JsonResponse({"form": request.POST.dict(), "files": files})


def stream(request):
    n = int(request.GET.get("n", "5"))
    return StreamingHttpResponse(("line %d\n" % i for i in range(n)), content_type="text/plain")


def static_file(request, name):
    # FileResponse: Django's WSGI handler passes the file to wsgi.file_wrapper
    full = os.path.join(STATIC_DIR, os.path.basename(name))
    if not os.path.isfile(full):
        return HttpResponse(status=404)
    return FileResponse(open(full, "rb"), content_type="text/plain")


def environ(request):
    """The environ keys a reverse proxy in front of gunicorn changes."""
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
            "SCRIPT_NAME", "PATH_INFO", "SERVER_NAME", "SERVER_PROTOCOL")
    return HttpResponse(json.dumps({k: request.META.get(k) for k in keys}, sort_keys=True),
                        content_type="application/json")


urlpatterns = [
    path("", index),
    path("session/set", session_set),
    path("session/get", session_get),
    path("form", form),
    path("upload", upload),
    path("stream", stream),
    path("static/<str:name>", static_file),
    path("environ", environ),
]

application = get_wsgi_application()
