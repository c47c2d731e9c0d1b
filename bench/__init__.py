"""Side-by-side benchmarks of turboworkers against stock gunicorn workers and peers.

``python -m bench`` runs the harness (see bench.run), ``python -m bench.parser``
the HTTP parser micro-benchmark. Results go to bench/results/.
"""
