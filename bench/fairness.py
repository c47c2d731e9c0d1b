"""fair-4w: how evenly each accept engine spreads sustained keep-alive load
over 4 workers, and what the engine costs in throughput.

wrk does not say which worker answered: bench/lua/tally.lua counts the
X-Worker-Pid header of every answer. The variants of one worker class run
side by side and are measured in interleaved rounds; throughput is compared
with the fastest engine of the same class, round by round.
"""
import os

from bench import loadgen, stats, variants

# every engine each class accepts; "none" is the stock-like baseline
ENGINES = {
    "turbo-sync": ("queue", "sem", "fcntl", "epoll", "none"),
    "turbo-thread": ("epoll", "none"),
    "turbo-gevent": ("sem", "fcntl", "epoll", "none"),
}
TALLY_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", "tally.lua")


def round_figures(wrk, tally, workers):
    """One round's figures from wrk's summary and the per-pid tally.

    ``workers`` are the pids of the server's workers after the round; a pid in
    the tally that is not one of them (a worker replaced during the round, or
    an answer without the header) is counted as ``unknown``. Jain's index is
    over the ``workers`` (one that served nothing counts as 0).
    """
    counts = [tally.get(pid, 0) for pid in workers]
    unknown = sum(n for pid, n in tally.items() if pid not in workers)
    return {
        "rps": wrk["rps"],
        "requests": wrk["requests"],
        "counted": sum(tally.values()),
        "per_worker": counts,
        "unknown_pid_requests": unknown,
        "jain": stats.jain(counts, n=len(workers)) if workers else None,
        "failed": wrk["failed"],
        "p50_ms": wrk["p50_ms"],
        "p99_ms": wrk["p99_ms"],
    }


def summarize(records):
    """Per variant: medians over the rounds, and its throughput as a share of
    the fastest engine of the same class (median of per-round ratios)."""
    by_class = {}
    for rec in records:
        runs = [r for r in rec.get("runs", []) if "error" not in r]
        s = {"rounds": len(runs), "errors": len(rec.get("runs", [])) - len(runs)}
        if runs:
            s["rps"] = stats.median([r["rps"] for r in runs])
            s["jain"] = stats.median([r["jain"] for r in runs])
            s["jain_min"] = min((r["jain"] for r in runs if r["jain"] is not None),
                                default=None)
            s["failed"] = sum(r.get("failed") or 0 for r in runs)
            s["unknown_pid_requests"] = sum(r.get("unknown_pid_requests") or 0 for r in runs)
            s["p99_ms"] = stats.median([r.get("p99_ms") for r in runs])
            mid = sorted((r for r in runs if r["jain"] is not None),
                         key=lambda r: r["jain"])
            if mid:
                s["per_worker"] = sorted(mid[(len(mid) - 1) // 2]["per_worker"], reverse=True)
            by_class.setdefault(rec["name"], []).append(rec)
        rec["summary"] = s
    for recs in by_class.values():
        fastest_name, _ = stats.best({r["label"]: r["summary"].get("rps") for r in recs})
        fastest = next(r for r in recs if r["label"] == fastest_name)
        for rec in recs:
            a = {r["round"]: r["rps"] for r in rec["runs"] if "error" not in r}
            b = {r["round"]: r["rps"] for r in fastest["runs"] if "error" not in r}
            common = sorted(set(a) & set(b))
            rec["summary"]["vs_fastest"] = stats.paired_ratio([a[k] for k in common],
                                                              [b[k] for k in common])
            rec["summary"]["fastest"] = fastest["engine"]
    return records


def run(scenario, entries, args, tmp_root, result, log=print):
    """Each worker class with all its engines side by side, rounds interleaved."""
    groups = []
    for server, reason in entries:
        groups.append(variants.expand([(server, reason)], ENGINES))

    def warmup(variant, rs):
        if args.warmup >= 1:
            loadgen.run_wrk(rs.url, rs.options["load_connections"], args.warmup)
        else:
            loadgen.sequential(variants.host(), rs.port, 50, total_timeout=20)

    def one_round(variant, rs, rnd):
        wrk, out = loadgen.run_wrk(rs.url, rs.options["load_connections"], args.duration,
                                   script=TALLY_SCRIPT)
        changed = rs.refresh_workers()
        fig = round_figures(wrk, loadgen.parse_tally(out), list(rs.workers))
        fig["workers_changed"] = changed
        fig["worker_pids"] = list(rs.workers)
        fig["line"] = "%8.0f req/s  jain %.3f  failed %d  [%s]" % (
            fig["rps"], fig["jain"] or 0, fig["failed"],
            " ".join(str(c) for c in sorted(fig["per_worker"], reverse=True)))
        return fig

    variants.run_groups(scenario, groups, args, tmp_root, result, one_round,
                        warmup_fn=warmup, rounds=scenario.rounds(args.rounds), log=log)
