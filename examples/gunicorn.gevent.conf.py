# gunicorn -c examples/gunicorn.gevent.conf.py app:app
#
# GeventMutexWorker (instead of -k gevent; pip install 'turboworkers[gevent]'):
# greenlets, up to worker_connections per process. For I/O-bound apps whose
# libraries cooperate with gevent's monkey-patching (sockets, time.sleep, most
# pure-Python database drivers).
import os

worker_class = "turboworkers.GeventMutexWorker"
bind = "unix:/run/gunicorn.sock"      # systemd socket activation: leave bind out

# One process per core; each process serves many waiting requests at once.
workers = os.cpu_count() or 1
# Concurrent connections per process. A process with more than 7/8 of them
# open stops taking new ones until it has room again.
worker_connections = 1000
# Each request head must arrive within keepalive seconds.
keepalive = 5

timeout = 30
graceful_timeout = 30
max_requests = 10000
max_requests_jitter = 1000

forwarded_allow_ips = "127.0.0.1"
worker_tmp_dir = "/dev/shm"
accesslog = "-"
