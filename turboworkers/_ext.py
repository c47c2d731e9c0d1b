"""Which HTTP implementation this process uses: the compiled one or gunicorn's.

``TURBOWORKERS_NO_EXTENSIONS=1`` (or an extension module that cannot be
imported) selects pure mode: the workers keep their accept strategy and use
gunicorn's own parser and response writer. ``MODE`` says which one loaded, and
``IMPORT_ERROR`` why the extensions were not used when they were wanted.
"""
import os

_FALSE = ("", "0", "false", "no", "off")

http_parser = None
response = None
tick = None
IMPORT_ERROR = None

if os.environ.get("TURBOWORKERS_NO_EXTENSIONS", "").strip().lower() in _FALSE:
    try:
        from turboworkers import _http_parser as http_parser  # noqa: F811
        from turboworkers import _response as response  # noqa: F811
        from turboworkers import _tick as tick  # noqa: F811
    except ImportError as exc:  # no compiler where it was installed
        http_parser = response = tick = None
        IMPORT_ERROR = exc

MODE = "accelerated" if http_parser is not None else "pure"
