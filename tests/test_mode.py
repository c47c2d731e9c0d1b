"""The mode that loaded is the one this run expects, in the test process and in a worker.

``make test`` runs the suite twice and sets ``TURBOWORKERS_EXPECT_MODE`` to
``accelerated`` or ``pure``; without it, the mode must at least agree with
``TURBOWORKERS_NO_EXTENSIONS``. A worker started by gunicorn inherits the
environment and says at start which HTTP code it uses.
"""
import os
import re

import pytest

from turboworkers import _ext

_FALSE = ("", "0", "false", "no", "off")
EXPECT = os.environ.get("TURBOWORKERS_EXPECT_MODE", "").strip().lower()
NO_EXTENSIONS = os.environ.get("TURBOWORKERS_NO_EXTENSIONS", "").strip().lower() not in _FALSE

CYTHON_LINE = "turboworkers: Cython HTTP parser and response writer"
PURE_LINE = "turboworkers: gunicorn's HTTP parser ("


def test_expected_mode_is_a_known_one():
    assert EXPECT in ("", "accelerated", "pure"), \
        "TURBOWORKERS_EXPECT_MODE=%r: use accelerated or pure" % EXPECT


def test_mode_that_loaded():
    why = "" if _ext.IMPORT_ERROR is None else " (import error: %s)" % _ext.IMPORT_ERROR
    if EXPECT:
        assert _ext.MODE == EXPECT, "expected %s mode, %s loaded%s" % (EXPECT, _ext.MODE, why)
    if NO_EXTENSIONS:
        assert _ext.MODE == "pure"
        assert _ext.http_parser is None and _ext.response is None
        assert _ext.IMPORT_ERROR is None  # nothing was tried
    elif _ext.MODE == "pure":
        # extensions were wanted: pure mode is only right when they could not be imported
        assert _ext.IMPORT_ERROR is not None, "pure mode without a reason"


def test_accelerated_modules_are_compiled():
    """In accelerated mode the modules in use are the compiled ones, not a twin."""
    if _ext.MODE != "accelerated":
        pytest.skip("pure mode: no compiled module is in use")
    import importlib.machinery
    for mod in (_ext.http_parser, _ext.response):
        assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    import turboworkers
    assert turboworkers.MODE == "accelerated"


def _expected_worker_line():
    if _ext.MODE == "accelerated":
        return CYTHON_LINE, "[DEBUG] "
    if NO_EXTENSIONS:
        return PURE_LINE + "TURBOWORKERS_NO_EXTENSIONS is set)", "[INFO] "
    return PURE_LINE + "extensions not importable: ", "[INFO] "


def test_worker_logs_its_http_implementation(gunicorn_server):
    srv = gunicorn_server(workers=2, log_level="debug")
    text = srv.log_text()
    line, level = _expected_worker_line()
    mine = [l for l in text.splitlines() if "turboworkers: " in l and "HTTP parser" in l]
    assert len(mine) == 2, "one line per worker expected:\n%s" % "\n".join(mine)
    pids = set()
    for l in mine:
        m = re.search(r"\[(\d+)\] (\[\w+\] )", l)
        assert m and m.group(2) == level and line in l, (line, level, l)
        pids.add(int(m.group(1)))
    assert pids == set(srv.worker_pids()), "the lines must come from the workers"
    other = CYTHON_LINE if line.startswith(PURE_LINE) else PURE_LINE
    assert other not in text
    assert srv.get("/_/hello").status == 200


def test_worker_falls_back_to_gunicorns_parser_when_asked(gunicorn_server):
    """``--http-parser python`` is honoured by using gunicorn's parser (said at info level)."""
    srv = gunicorn_server(workers=1, log_level="info", args=["--http-parser", "python"])
    text = srv.wait_for_log(r"turboworkers: gunicorn's HTTP parser \(([^)]*)\)")
    if _ext.MODE == "accelerated":
        assert text == ["http_parser = python"], text
    assert CYTHON_LINE not in srv.log_text()
    assert srv.get("/_/hello").body == b"Hello, world!\n"
