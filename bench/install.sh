#!/bin/sh
# Installs what the benchmark needs, and only what is missing:
#   Debian: wrk, apache2-utils (ab), nginx, libev-dev (to build bjoern);
#   the venv: the project's `bench` extra, then each peer server on its own.
# A peer that fails to install is not fatal: the harness reports it as not
# installed, with the end of its log (bench/results/tmp/install-NAME.log).
#
#   sh bench/install.sh [PYTHON]      (default .venv/bin/python)
set -u
PY=${1:-.venv/bin/python}
LOGDIR=bench/results/tmp
mkdir -p "$LOGDIR"

# ---------------------------------------------------------------- Debian
missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v ab >/dev/null 2>&1 || missing="$missing apache2-utils"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -f /usr/include/ev.h ] || missing="$missing libev-dev"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench/install.sh: apt-get install$missing"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq $missing; } >"$LOGDIR/install-apt.log" 2>&1; then
            echo "bench/install.sh: apt-get failed (see $LOGDIR/install-apt.log); going on"
        fi
    else
        echo "bench/install.sh: missing$missing; install them as root (apt-get install$missing)"
    fi
fi

# ---------------------------------------------------------------- the venv
has() { "$PY" -c "import $1" >/dev/null 2>&1; }

# the project's bench extra (matplotlib, flask, httptools, gunicorn_h1c)
if ! has matplotlib || ! has flask || ! has httptools || ! has gunicorn_h1c; then
    echo "bench/install.sh: pip install -e .[bench]"
    if ! "$PY" -m pip install -q --no-build-isolation -e ".[bench]" \
            >"$LOGDIR/install-bench-extra.log" 2>&1; then
        # the editable install also compiles cext/: if that fails now, install
        # the extra's requirements alone, so the peers can still be measured
        echo "bench/install.sh: editable install failed (see $LOGDIR/install-bench-extra.log);" \
             "installing the extra's requirements only"
        "$PY" - <<'EOF' >>"$LOGDIR/install-bench-extra.log" 2>&1
import subprocess, sys, tomllib
with open("pyproject.toml", "rb") as f:
    reqs = tomllib.load(f)["project"]["optional-dependencies"]["bench"]
subprocess.call([sys.executable, "-m", "pip", "install", "-q"] + reqs)
EOF
    fi
fi

# peers: module name, then pip arguments
peer() {
    module=$1; shift
    has "$module" && return 0
    echo "bench/install.sh: pip install $*"
    if ! "$PY" -m pip install -q "$@" >"$LOGDIR/install-$module.log" 2>&1; then
        echo "bench/install.sh: $module did not install (see $LOGDIR/install-$module.log)"
    fi
}
peer gevent "gevent>=23.9"
peer gunicorn_h1c "gunicorn_h1c>=0.6"
peer granian granian
peer bjoern bjoern
peer greenlet greenlet
peer meinheld --no-deps meinheld==1.0.2
exit 0
