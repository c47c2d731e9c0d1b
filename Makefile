# turboworkers: the two commands of the README (`make run`, `make test`) and their helpers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKER ?= turboworkers.SyncMutexWorker
PYTEST_ARGS ?=

.PHONY: run test test-accelerated test-pure build venv bench bench-quick bench-reliability clean fuzz system-deps

# The virtualenv is remade when the project's dependencies change.
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# A venv starts with the setuptools of its Python (65 on 3.11), too old for
	# the SPDX license field of this project and of sdist-only dependencies
	# (gunicorn_h1c), which build with this setuptools (no build isolation).
	$(PIP) install -q --upgrade "setuptools>=77" wheel "Cython>=3.0"
	$(PIP) install -q --no-build-isolation -e ".[test,gevent]"
	touch $@

venv: $(VENV)/.installed

# The deployment tests run real nginx and curl (Debian packages). Installed
# only when missing and only as root; otherwise those tests skip with the reason.
SYSTEM_TOOLS := nginx:nginx curl:curl
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null 2>&1 || test -x /usr/sbin/$$cmd || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing (Debian packages) for the deployment tests"; \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q$$missing) \
			|| echo "could not install$$missing: the tests that need it will skip"; \
	else \
		echo "missing$$missing and not root (or no apt-get): the tests that need it will skip"; \
	fi

# Compiles every cext/*.pyx next to the package (an editable install finds them there).
build: venv system-deps
	$(PY) setup.py -q build_ext --inplace

run: build
	@echo "serving examples/hello.py with $(WORKER) on http://$(HOST):$(PORT)/ (Ctrl-C stops)"
	cd examples && ../$(VENV)/bin/gunicorn -k $(WORKER) -b $(HOST):$(PORT) hello:app

# The whole suite twice: with the compiled extensions and in pure mode.
test: build
	$(MAKE) --no-print-directory test-accelerated
	$(MAKE) --no-print-directory test-pure

test-accelerated:
	@echo "== accelerated mode =="
	TURBOWORKERS_EXPECT_MODE=accelerated $(PY) -m pytest -q $(PYTEST_ARGS)

test-pure:
	@echo "== pure mode (TURBOWORKERS_NO_EXTENSIONS=1) =="
	TURBOWORKERS_NO_EXTENSIONS=1 TURBOWORKERS_EXPECT_MODE=pure $(PY) -m pytest -q $(PYTEST_ARGS)

# The benchmark (bench/): installs what is missing (Debian tools as root, peers
# in the venv), builds the extensions, runs every scenario (<= 15 min), then
# the parser micro-benchmark. Results in bench/results/.
bench:
	$(MAKE) --no-print-directory build || echo "bench: build failed; turbo workers run as they import (the report shows the mode)"
	sh bench/install.sh $(PY)
	$(PY) -m bench --preset full
	$(PY) -m bench.parser

# hello world (1 worker, 50 keep-alive connections) and the herd with fewer peers (<= 3 min)
bench-quick:
	$(MAKE) --no-print-directory build || echo "bench: build failed; turbo workers run as they import (the report shows the mode)"
	sh bench/install.sh $(PY)
	$(PY) -m bench --preset quick

# fairness per accept engine, SIGKILL recovery, RSS over a million requests
# (under 15 min on 2 cores); results in bench/results/reliability.json and .md
bench-reliability:
	$(MAKE) --no-print-directory build || echo "bench: build failed; turbo workers run as they import (the report shows the mode)"
	sh bench/install.sh $(PY)
	$(PY) -m bench --preset reliability

clean:
	rm -rf build turboworkers/*.so cext/*.c *.egg-info

# The differential fuzzer of the parser (tests/fuzz_parser.py, atheris; its
# random-mutation loop where atheris is missing) for FUZZ_SECONDS over
# fuzz/corpus/, new corpus entries kept there, a failing input saved in fuzz/.
FUZZ_SECONDS ?= 600
fuzz: build
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) tests/fuzz_parser.py fuzz/corpus \
		-max_total_time=$(FUZZ_SECONDS) -timeout=10 -max_len=4100 -artifact_prefix=fuzz/
