"""High-performance, herd-free worker classes for stock gunicorn.

Use a class by name, for example ``gunicorn -k turboworkers.SyncMutexWorker app:app``.
The classes are loaded on first access so that importing the package costs
nothing and never imports an optional dependency such as gevent.
"""
import importlib

__version__ = "0.1.0"

# class name -> module that holds it
_WORKERS = {
    "SyncMutexWorker": "turboworkers.sync",
    "GeventMutexWorker": "turboworkers.gevent_mutex",
    "EpollThreadWorker": "turboworkers.epoll_thread",
}

__all__ = sorted(_WORKERS) + ["MODE", "__version__"]


def __getattr__(name):
    if name == "MODE":
        from turboworkers._ext import MODE
        return MODE
    module = _WORKERS.get(name)
    if module is None:
        raise AttributeError("module 'turboworkers' has no attribute %r" % name)
    return getattr(importlib.import_module(module), name)


def __dir__():
    return __all__
