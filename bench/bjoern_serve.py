"""Run bjoern with N worker processes sharing one listening socket.

bjoern itself is single-process; this is the usual way to give it several
workers: listen once, then fork. The parent only waits and forwards SIGTERM,
so the harness sees the same shape as gunicorn (one master, N workers).

    python -m bench.bjoern_serve MODULE:APP HOST PORT WORKERS
"""
import importlib
import os
import signal
import sys


def main(argv):
    target, host, port, workers = argv[1], argv[2], int(argv[3]), int(argv[4])
    module_name, _, attr = target.partition(":")
    import bjoern

    app = getattr(importlib.import_module(module_name), attr or "app")
    bjoern.listen(app, host, port)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                bjoern.run()
            finally:
                os._exit(0)
        children.append(pid)

    def stop(signum, frame):
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    remaining = set(children)
    while remaining:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        if remaining:
            stop(None, None)  # one worker gone: take the rest down, no silent degradation
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
