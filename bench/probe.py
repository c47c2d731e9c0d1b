"""What is installed, and at which version: run in a fresh interpreter.

``python -m bench.probe`` prints one JSON object. The harness runs it as a
subprocess so that importing gevent, meinheld or a half-built extension
never touches the harness's own process.
"""
import importlib
import json
import platform
import sys

# worker classes of turboworkers that the harness knows how to run
TURBO_CLASSES = ("SyncMutexWorker", "EpollThreadWorker", "GeventMutexWorker")

# module -> distribution name for the version
MODULES = {
    "gunicorn": "gunicorn",
    "gunicorn_h1c": "gunicorn_h1c",
    "gevent": "gevent",
    "greenlet": "greenlet",
    "meinheld": "meinheld",
    "granian": "granian",
    "bjoern": "bjoern",
    "flask": "flask",
    "httptools": "httptools",
    "matplotlib": "matplotlib",
}


def _reason(exc):
    return "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "")


def _version(dist):
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - a missing distribution is an answer too
        return None


def probe():
    out = {"python": platform.python_version(), "executable": sys.executable,
           "modules": {}, "turbo": {}}
    for module, dist in MODULES.items():
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - a broken extension may raise anything
            out["modules"][module] = {"ok": False, "reason": _reason(exc), "version": None}
        else:
            out["modules"][module] = {"ok": True, "reason": None, "version": _version(dist)}
    try:
        import turboworkers
    except BaseException as exc:  # noqa: BLE001
        out["turboworkers"] = {"ok": False, "reason": _reason(exc)}
        for name in TURBO_CLASSES:
            out["turbo"][name] = {"ok": False, "reason": "turboworkers does not import: " + _reason(exc)}
        return out
    info = {"ok": True, "version": getattr(turboworkers, "__version__", None)}
    try:
        from turboworkers import _ext
        info["mode"] = _ext.MODE
        info["import_error"] = None if _ext.IMPORT_ERROR is None else _reason(_ext.IMPORT_ERROR)
    except BaseException as exc:  # noqa: BLE001
        info["mode"] = None
        info["import_error"] = _reason(exc)
    out["turboworkers"] = info
    for name in TURBO_CLASSES:
        try:
            ok = hasattr(turboworkers, name)
        except BaseException as exc:  # noqa: BLE001 - listed, but its module is not there yet
            out["turbo"][name] = {"ok": False, "reason": "not built yet (%s)" % _reason(exc)}
            continue
        out["turbo"][name] = {"ok": ok, "reason": None if ok else "not built yet"}
    return out


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
    sys.stdout.write("\n")
