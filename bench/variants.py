"""Turbo servers started with a chosen accept engine: what the reliability
scenarios (fair-4w, kill-4w, leak-1m) measure, and the loop that runs them.

A variant is one turbo server with ``TURBOWORKERS_ACCEPT`` set in the
launched server's environment (or unset: the class's own default).
``TURBOWORKERS_EPOLL_ROTATE`` is removed from that environment, so every
engine runs with its default rotation whatever the harness's shell has.
"""
import os
import signal
import time

from bench import procs

ACCEPT_ENV = "TURBOWORKERS_ACCEPT"
ROTATE_ENV = "TURBOWORKERS_EPOLL_ROTATE"


def host():
    """The loopback address every server listens on (bench.run's)."""
    from bench.run import HOST
    return HOST


class Variant:
    def __init__(self, server, engine=None):
        self.server = server
        self.engine = engine

    @property
    def label(self):
        return "%s/%s" % (self.server.name, self.engine or "default")

    def record(self):
        return {"name": self.server.name, "title": self.server.title, "engine": self.engine,
                "label": self.label, "status": "skipped", "reason": None, "runs": []}


def server_env(env, engine):
    """The launched server's environment with ``engine`` chosen."""
    env = dict(env)
    env.pop(ROTATE_ENV, None)
    if engine is None:
        env.pop(ACCEPT_ENV, None)
    else:
        env[ACCEPT_ENV] = engine
    return env


def expand(entries, engines):
    """[(Variant, skip reason)] for plan entries [(server, reason)] and
    ``engines`` {server name: engines to run it with} (missing: default only)."""
    out = []
    for server, reason in entries:
        for engine in engines.get(server.name, (None,)):
            out.append((Variant(server, engine), reason))
    return out


def run_groups(scenario, groups, args, tmp_root, result, round_fn, *, warmup_fn=None,
               rounds=1, log=print):
    """Start each group of variants side by side, measure them in interleaved
    rounds (``round_fn(variant, running, round) -> figures``), stop them.

    ``groups`` is a list of lists of (Variant, skip reason). Records go into
    ``result["variants"]`` first, so an interrupted run reports what it had.
    """
    from bench.run import READY_TIMEOUT, Running
    for group in groups:
        started = []
        try:
            for variant, reason in group:
                rec = variant.record()
                result["variants"].append(rec)
                if reason is not None:
                    rec["reason"] = reason
                    log("  skip %-20s %s" % (variant.label, reason))
                    continue
                tmpdir = os.path.join(tmp_root, scenario.name, variant.label.replace("/", "-"))
                os.makedirs(tmpdir, exist_ok=True)
                rs = Running(variant.server, scenario, args, tmpdir)
                rs.launch.env = server_env(rs.launch.env, variant.engine)
                rec["options"] = dict(rs.options, engine=variant.engine)
                rs.start()
                started.append((variant, rs, rec))
            deadline = time.monotonic() + READY_TIMEOUT
            ready = []
            for variant, rs, rec in started:
                if rs.wait_ready(deadline):
                    rec["status"] = "ok"
                    ready.append((variant, rs, rec))
                else:
                    rec["status"] = "failed"
                    rec["reason"] = "did not start: " + rs.error
                    log("  FAIL %-20s %s" % (variant.label, rec["reason"]))
                    rs.stop()
            if warmup_fn is not None:
                for variant, rs, rec in ready:
                    try:
                        warmup_fn(variant, rs)
                    except (RuntimeError, OSError, ValueError) as exc:
                        log("  warm-up of %s: %s" % (variant.label, exc))
                    rs.refresh_workers()
            for rnd in range(1, rounds + 1):
                for variant, rs, rec in ready:
                    if rec["status"] != "ok":
                        continue
                    if not rs.alive():
                        rec["status"] = "failed"
                        rec["reason"] = "exited during the run (code %s): %s" % (
                            rs.proc.returncode, rs.log_tail())
                        log("  FAIL %-20s %s" % (variant.label, rec["reason"]))
                        continue
                    try:
                        fig = round_fn(variant, rs, rnd)
                    except (RuntimeError, OSError, ValueError) as exc:
                        fig = {"error": str(exc)}
                    fig["round"] = rnd
                    rec["runs"].append(fig)
                    log("  %-9s round %d/%d %-20s %s" % (
                        scenario.name, rnd, rounds, variant.label,
                        fig["error"] if "error" in fig else fig.get("line", "")))
        finally:
            for _, rs, _ in started:
                if rs.proc is not None:
                    procs.signal_group(rs.proc.pid, signal.SIGTERM)
            for _, rs, _ in started:
                rs.stop()
