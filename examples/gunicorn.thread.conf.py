# gunicorn -c examples/gunicorn.thread.conf.py app:app
#
# EpollThreadWorker (instead of -k gthread): `threads` threads per process
# around one epoll; keep-alive connections cost no thread while idle. The
# choice when the workload is unknown or mixed.
import os

worker_class = "turboworkers.EpollThreadWorker"
bind = "unix:/run/gunicorn.sock"      # systemd socket activation: leave bind out

# One process per core runs Python in parallel; the threads of a process
# overlap waiting (database, network) but share one core for Python code.
workers = os.cpu_count() or 1
# Requests one process has in the app at once. 2 to 4 for a mixed workload:
# threads that all run Python queue for the GIL, so CPU-bound requests get
# slower with more of them (the README's --threads table); 1 or 2 for a
# CPU-bound app on kept-alive connections. For mostly waiting (I/O-bound)
# apps, about the concurrency you expect per process (32 in
# bench/results/latest.md's I/O scenario).
threads = 4
# Open connections per process (idle keep-alive ones included).
worker_connections = 1000
# Idle keep-alive connections are closed after this many seconds; behind
# nginx's upstream keepalive a few seconds are enough.
keepalive = 5

timeout = 30
graceful_timeout = 30
max_requests = 10000
max_requests_jitter = 1000

forwarded_allow_ips = "127.0.0.1"
worker_tmp_dir = "/dev/shm"
accesslog = "-"
