# gunicorn -c examples/gunicorn.sync.conf.py app:app
#
# SyncMutexWorker (instead of -k sync): one request at a time per process.
# For CPU-bound apps behind a buffering proxy (examples/nginx.conf): nginx
# absorbs slow clients, so a worker is never held by one.
import os

worker_class = "turboworkers.SyncMutexWorker"
bind = "unix:/run/gunicorn.sock"      # systemd socket activation: leave bind out

# A process runs Python on one core at a time (the GIL): one worker per core,
# plus one so that a core is not idle while a worker waits on the database.
workers = (os.cpu_count() or 1) + 1
# threads must stay 1: SyncMutexWorker refuses more (with -k sync, threads > 1
# silently means gthread)

# A worker that does not answer the master's heartbeat for timeout seconds is
# killed; a long request in a sync worker counts against it.
timeout = 30
graceful_timeout = 30
# Recycle workers now and then (a slow leak in the app stays bounded); the
# jitter keeps them from restarting all at once.
max_requests = 10000
max_requests_jitter = 1000

# Requests come from nginx on this machine: trust its X-Forwarded-Proto.
forwarded_allow_ips = "127.0.0.1"
# The heartbeat file in memory, not on a disk that may stall.
worker_tmp_dir = "/dev/shm"
accesslog = "-"
