"""Turn the measured runs into medians and ratios, and write them out:
``latest.json``, ``latest.md``, ``README-snippet.md`` and PNG plots.
"""
import json
import os

from bench import stats

FAMILY_ORDER = {"turbo": 0, "stock": 1, "peer": 2, "ceiling": 3}
FAMILY_COLOR = {"turbo": "#d62728", "stock": "#1f77b4", "peer": "#7f7f7f", "ceiling": "#2ca02c"}


# ------------------------------------------------------------------ summaries

def _by_round(rec, key):
    return {run["round"]: run.get(key) for run in rec.get("runs", []) if "round" in run}


def _paired(rec_a, rec_b, key):
    a, b = _by_round(rec_a, key), _by_round(rec_b, key)
    rounds = sorted(set(a) & set(b))
    return stats.paired_ratio([a[r] for r in rounds], [b[r] for r in rounds])


def summarize_server(rec):
    runs = [r for r in rec.get("runs", []) if "error" not in r]
    s = {"rounds": len(runs), "errors": len(rec.get("runs", [])) - len(runs)}
    if not runs:
        return s
    s["rps"] = stats.median([r.get("rps") for r in runs])
    s["p50_ms"] = stats.median([r.get("p50_ms") for r in runs])
    s["p99_ms"] = stats.median([r.get("p99_ms") for r in runs])
    s["failed"] = sum(r.get("failed") or 0 for r in runs)
    s["requests"] = sum(r.get("requests") or 0 for r in runs)
    per_run_rss = []
    for r in runs:
        vals = [v for v in r.get("rss_kib", []) if v]
        if vals:
            per_run_rss.append(sum(vals) / len(vals) / 1024.0)
    s["rss_mb_per_worker"] = stats.median(per_run_rss)
    if any("cs_per_request" in r for r in runs):
        s["cs_per_request"] = stats.median([r.get("cs_per_request") for r in runs])
        s["jain"] = stats.median([r.get("jain") for r in runs])
        # the spread shown is the round whose Jain index is the median one
        ordered = sorted((r for r in runs if r.get("jain") is not None),
                         key=lambda r: r["jain"])
        if ordered:
            mid = ordered[(len(ordered) - 1) // 2]
            s["per_worker"] = sorted(mid["per_worker"], reverse=True)
            s["per_worker_round"] = mid["round"]
        s["workers_changed"] = any(r.get("workers_changed") for r in runs)
    return s


def summarize(results):
    """Add a ``summary`` to every server record and ``ratios`` where they apply."""
    for scen in results["scenarios"]:
        recs = {r["name"]: r for r in scen["servers"]}
        for rec in scen["servers"]:
            rec["summary"] = summarize_server(rec) if rec["status"] == "ok" else {}
        ok = {n: r for n, r in recs.items() if r["status"] == "ok" and r["summary"].get("rounds")}
        herd = scen["load"] == "sequential"
        key = "cs_per_request" if herd else "rps"
        peers = {n: r["summary"].get("rps") for n, r in ok.items()
                 if r["family"] in ("stock", "peer")}
        ceiling = ok.get("nginx")
        for name, rec in ok.items():
            ratios = {}
            if rec["stock"]:
                for label, stock_name in zip(("vs_stock_py", "vs_stock_fast"), rec["stock"]):
                    if stock_name in ok:
                        ratios[label] = _paired(rec, ok[stock_name], key)
                        ratios[label + "_name"] = stock_name
                    if herd and stock_name in ok:
                        ratios[label.replace("vs", "jain_vs")] = _paired(rec, ok[stock_name], "jain")
            if not herd:
                others = {n: v for n, v in peers.items() if n != name}
                best_name, _ = stats.best(others)
                if best_name and rec["family"] != "ceiling":
                    ratios["vs_best_peer"] = _paired(rec, ok[best_name], "rps")
                    ratios["best_peer"] = best_name
                if ceiling is not None and name != "nginx":
                    ratios["vs_ceiling"] = _paired(rec, ceiling, "rps")
            rec["summary"]["ratios"] = ratios
    return results


# ------------------------------------------------------------------ markdown

def _f(v, fmt="%.2f", none="–"):
    return none if v is None else fmt % v


def _x(v):
    return "–" if v is None else "%.2f×" % v


def _sorted_recs(scen):
    return sorted(scen["servers"], key=lambda r: FAMILY_ORDER.get(r["family"], 9))


def scenario_table(scen, compact=False):
    lines = []
    herd = scen["load"] == "sequential"
    recs = [r for r in _sorted_recs(scen) if r["status"] == "ok" and r["summary"].get("rounds")]
    if not recs:
        return ["(no server ran)"]
    if herd:
        head = ["server", "ctx switches / request", "Jain index", "requests per worker",
                "p50 ms", "p99 ms", "failed", "RSS MB / worker", "cs vs stock py",
                "cs vs stock fast"]
        if compact:
            head = head[:4] + head[8:]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in recs:
            s, q = r["summary"], r["summary"].get("ratios", {})
            row = [r["name"], _f(s.get("cs_per_request")), _f(s.get("jain"), "%.3f"),
                   " ".join(str(c) for c in s.get("per_worker", [])),
                   _f(s.get("p50_ms")), _f(s.get("p99_ms")), str(s.get("failed", 0)),
                   _f(s.get("rss_mb_per_worker"), "%.1f"),
                   _x(q.get("vs_stock_py")), _x(q.get("vs_stock_fast"))]
            if compact:
                row = row[:4] + row[8:]
            lines.append("| " + " | ".join(row) + " |")
        return lines
    head = ["server", "req/s", "p50 ms", "p99 ms", "failed", "RSS MB / worker",
            "vs stock py", "vs stock fast", "vs best peer", "of nginx"]
    if compact:
        head = ["server", "req/s", "p50 ms", "p99 ms", "vs stock py", "vs stock fast",
                "vs best peer"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in recs:
        s, q = r["summary"], r["summary"].get("ratios", {})
        best = q.get("vs_best_peer")
        best_s = "%s (%s)" % (_x(best), q["best_peer"]) if best is not None else "–"
        if compact:
            row = [r["name"], _f(s.get("rps"), "%.0f"), _f(s.get("p50_ms")),
                   _f(s.get("p99_ms")), _x(q.get("vs_stock_py")), _x(q.get("vs_stock_fast")),
                   best_s]
        else:
            row = [r["name"], _f(s.get("rps"), "%.0f"), _f(s.get("p50_ms")),
                   _f(s.get("p99_ms")), str(s.get("failed", 0)),
                   _f(s.get("rss_mb_per_worker"), "%.1f"),
                   _x(q.get("vs_stock_py")), _x(q.get("vs_stock_fast")), best_s,
                   _f(None if q.get("vs_ceiling") is None else 100 * q["vs_ceiling"],
                      "%.0f%%")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def not_run(results):
    """{server name: reason} over every scenario (first reason seen)."""
    out = {}
    for scen in results["scenarios"]:
        for r in scen["servers"]:
            if r["status"] != "ok" and r["name"] not in out:
                out[r["name"]] = "%s: %s" % (r["status"], r.get("reason"))
    return out


def _meta_lines(meta):
    peers = ", ".join("%s %s" % (k, v if v else "not installed")
                      for k, v in sorted(meta.get("peers", {}).items()))
    tools = ", ".join("%s %s" % (k, v or "not installed")
                      for k, v in meta.get("tools", {}).items())
    mode = meta.get("turboworkers_mode")
    if meta.get("turboworkers_import_error"):
        mode = "%s (%s)" % (mode, meta["turboworkers_import_error"])
    return [
        "- date: %s; `nproc`: %s; kernel: %s (%s)" % (meta["date"], meta["nproc"],
                                                      meta["kernel"], meta.get("machine")),
        "- Python %s, gunicorn %s, turboworkers %s (mode: %s; source: %s)" % (
            meta.get("python"), meta.get("gunicorn"), meta.get("turboworkers"), mode,
            meta.get("git") or "unknown"),
        "- peers: %s" % peers,
        "- 1-minute load average before / after the run: %s / %s (anything above what the "
        "benchmark itself causes means other work shared the cores)" % (
            meta.get("loadavg_start"), meta.get("loadavg_end")),
        "- tools: %s" % tools,
        "- command: `%s` (preset %s, %d rounds, %gs per wrk run, %gs warm-up; %s in all)" % (
            meta["command"], meta["preset"], meta["rounds"], meta["duration_s"],
            meta["warmup_s"], _duration(meta.get("elapsed_s"))),
    ]


def _duration(s):
    if s is None:
        return "?"
    s = int(round(s))
    return "%dm%02ds" % (s // 60, s % 60)


METHOD = """\
Method: client and servers share the same {nproc} cores on loopback, so only ratios
measured in the same run mean anything. In a one-worker wrk scenario every process of
the server is confined to one CPU and wrk, with one thread per CPU, to the others (said
under the scenario's table), so that neither the worker nor wrk's threads take turns
on a core. The servers of a scenario run side by side
(idle while another is measured) and are measured in interleaved rounds (A B C, A B C,
...). Figures are medians over the rounds; a ratio is the median of the per-round
ratios (round i of both servers ran close in time). "failed" sums non-2xx answers,
socket errors (connect, read, write, timeout) and ab's failed requests (a request
counted once) over all rounds.
Latency: wrk's `--latency` percentiles; ab's percentiles (its `-e` CSV);
the raw-socket client's own timings for the herd. RSS: VmRSS of every worker process
after each run, averaged per worker. Herd: voluntary + nonvoluntary context switches
of every thread of every worker process, read from /proc before and after the
sequential requests, divided by the requests answered; Jain's index
(sum x)^2 / (n sum x^2) over the requests each of the n workers served (1.0 is even,
1/n is one worker taking everything). "requests per worker" shows the round with the
median Jain index, largest first. "vs stock py/fast": the matching stock gunicorn
worker with `--http-parser python` / `fast` (gunicorn_h1c); for the herd the ratio is
of context switches per request (lower is better). "vs best peer": against the fastest
other stock or peer server of the scenario (nginx excluded); "of nginx": against nginx
answering the same body, the ceiling of this machine."""


def markdown(results, plots):
    meta = results["meta"]
    out = ["# turboworkers benchmark", ""]
    out += _meta_lines(meta)
    out += ["", METHOD.format(nproc=meta["nproc"]), ""]
    for scen in results["scenarios"]:
        out += ["## %s: %s" % (scen["name"], scen["title"]), ""]
        if scen.get("rounds") and scen["rounds"] != meta.get("rounds"):
            out += ["%d rounds in this scenario." % scen["rounds"], ""]
        out += scenario_table(scen)
        if scen.get("server_cpus"):
            out += ["", "Pinned: the server on CPU %s, wrk (one thread per CPU) on CPU %s." % (
                ",".join(map(str, scen["server_cpus"])), ",".join(map(str, scen["load_cpus"])))]
        opts = _options_line(scen)
        if opts:
            out += ["", opts]
        skipped = [r for r in scen["servers"] if r["status"] != "ok"]
        if skipped:
            out += [""] + ["- not run: **%s**: %s" % (r["name"], r.get("reason"))
                           for r in skipped]
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += ["![%s](%s)" % (name, os.path.basename(path)) for name, path in plots]
        out.append("")
    return "\n".join(out)


def _options_line(scen):
    """Who ran with which options, servers with the same options grouped."""
    groups = {}
    for r in scen["servers"]:
        o = r.get("options")
        if not o or r["status"] != "ok":
            continue
        bits = ["%d worker(s)" % o["workers"]]
        if o.get("threads"):
            bits.append("--threads %d" % o["threads"])
        if o.get("worker_connections"):
            bits.append("--worker-connections %d" % o["worker_connections"])
        if scen["load"] != "sequential":
            bits.append("%d client connections" % o["load_connections"])
        groups.setdefault(", ".join(bits), []).append(r["name"])
    if not groups:
        return ""
    return "Options: " + "; ".join("%s: %s" % (", ".join(names), opts)
                                   for opts, names in groups.items()) + "."


def snippet(results, plots, out_dir):
    """The block README.md can include: the compact tables and the plot links."""
    meta = results["meta"]
    rel = os.path.relpath(out_dir, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = ["<!-- bench:start (generated by `python -m bench`, do not edit by hand) -->",
             "Measured %s on %s cores (kernel %s), Python %s, gunicorn %s, turboworkers %s "
             "(%s). Medians of %d interleaved rounds; client and server share the machine, "
             "so read the ratios, not the absolute numbers. Full tables and method: "
             "[%s/latest.md](%s/latest.md)." % (
                 meta["date"], meta["nproc"], meta["kernel"], meta["python"], meta["gunicorn"],
                 meta["turboworkers"], meta.get("turboworkers_mode"), meta["rounds"], rel, rel),
             ""]
    for scen in results["scenarios"]:
        lines += ["**%s**: %s" % (scen["name"], scen["title"]), ""]
        lines += scenario_table(scen, compact=True)
        lines.append("")
    missing = not_run(results)
    if missing:
        lines += ["Not run: " + "; ".join("%s (%s)" % kv for kv in sorted(missing.items())), ""]
    for name, path in plots:
        lines.append("![%s](%s/%s)" % (name, rel, os.path.basename(path)))
    if os.path.exists(os.path.join(out_dir, "parser.md")):
        lines += ["", "Parsing one browser request into a WSGI environ, side by side with "
                  "gunicorn's parsers, gunicorn_h1c and httptools: [%s/parser.md](%s/parser.md) "
                  "(`python -m bench.parser`)." % (rel, rel)]
    lines.append("<!-- bench:end -->")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ plots

def plot_all(results, out_dir):
    """Write the PNGs; returns [(title, path)]. Needs matplotlib (Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    written = []
    tput = [s for s in results["scenarios"] if s["load"] != "sequential"
            and any(r["status"] == "ok" and r["summary"].get("rps") for r in s["servers"])]
    if tput:
        rows = [[r for r in _sorted_recs(scen) if r["status"] == "ok" and r["summary"].get("rps")]
                for scen in tput]
        fig, axes = _stacked(plt, [len(r) for r in rows])
        for ax, scen, recs in zip(axes, tput, rows):
            names = [r["name"] for r in recs]
            med = [r["summary"]["rps"] for r in recs]
            lows = [min(x["rps"] for x in r["runs"] if x.get("rps")) for r in recs]
            highs = [max(x["rps"] for x in r["runs"] if x.get("rps")) for r in recs]
            y = list(range(len(recs)))
            ax.barh(y, med, xerr=[[m - lo for m, lo in zip(med, lows)],
                                  [hi - m for m, hi in zip(med, highs)]],
                    color=[FAMILY_COLOR[r["family"]] for r in recs], capsize=2,
                    error_kw={"lw": 0.8})
            ax.set_yticks(y)
            ax.set_yticklabels(names, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(_wrap("%s: %s" % (scen["name"], scen["title"])), fontsize=9)
            ax.set_xlabel("requests/s (median; whiskers: min-max over rounds)", fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_xlim(0, max(highs) * 1.18)
            for yy, m, hi in zip(y, med, highs):
                ax.text(hi, yy, "  %.0f" % m, va="center", fontsize=7)
            _family_legend(ax, recs)
        fig.tight_layout()
        path = os.path.join(out_dir, "throughput.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(("throughput per scenario", path))

        rows = [[r for r in _sorted_recs(scen)
                 if r["status"] == "ok" and r["summary"].get("p99_ms")] for scen in tput]
        fig, axes = _stacked(plt, [len(r) for r in rows])
        for ax, scen, recs in zip(axes, tput, rows):
            y = list(range(len(recs)))
            p50 = [r["summary"].get("p50_ms") or 0 for r in recs]
            p99 = [r["summary"].get("p99_ms") or 0 for r in recs]
            # markers, not bars: a bar on a log axis has no meaningful length
            ax.hlines(y, p50, p99, color="#bbbbbb", lw=1.5, zorder=1)
            ax.scatter(p50, y, label="p50", color="#1f77b4", zorder=2, s=22)
            ax.scatter(p99, y, label="p99", color="#ff7f0e", zorder=2, s=22, marker="D")
            for yy, a, b in zip(y, p50, p99):
                ax.text(b, yy, "  %.2f / %.2f" % (a, b), va="center", fontsize=7)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v))
            lo = min([v for v in p50 + p99 if v > 0] or [0.01])
            ax.set_xlim(lo / 1.6, max(p99 + [lo]) * 4)
            ax.set_yticks(y)
            ax.set_yticklabels([r["name"] for r in recs], fontsize=8)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_title(_wrap("%s: latency percentiles (%s)" % (scen["name"], scen["title"])),
                         fontsize=9)
            ax.set_xlabel("milliseconds, log scale (median over rounds; labels: p50 / p99)",
                          fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        path = os.path.join(out_dir, "latency.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(("latency percentiles", path))

    for scen in results["scenarios"]:
        if scen["load"] != "sequential":
            continue
        recs = [r for r in _sorted_recs(scen)
                if r["status"] == "ok" and r["summary"].get("per_worker") is not None]
        if not recs:
            continue
        cols = 4
        rows = (len(recs) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
        for ax in axes.flat:
            ax.set_visible(False)
        for ax, r in zip(axes.flat, recs):
            ax.set_visible(True)
            s = r["summary"]
            counts = s["per_worker"]
            ax.bar(range(1, len(counts) + 1), counts, color=FAMILY_COLOR[r["family"]])
            ax.set_ylim(0, max(1, sum(counts)))
            ax.axhline(sum(counts) / max(1, len(counts)), color="black", lw=0.8, ls="--")
            ax.set_title("%s\nJain %.3f, %.1f cs/request" % (
                r["name"], s.get("jain") or 0, s.get("cs_per_request") or 0), fontsize=8)
            ax.set_xlabel("worker (by requests served)", fontsize=7)
            ax.tick_params(labelsize=7)
        fig.suptitle("%s: requests per worker, %d sequential connections (dashed: even share)"
                     % (scen["name"], sum(recs[0]["summary"]["per_worker"]) or 0), fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, "herd.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(("requests per worker in the herd scenario", path))
    return written


def _family_legend(ax, recs):
    from matplotlib.patches import Patch
    fams = sorted({r["family"] for r in recs}, key=lambda f: FAMILY_ORDER.get(f, 9))
    names = {"turbo": "turboworkers", "stock": "stock gunicorn", "peer": "other peers",
             "ceiling": "nginx (ceiling)"}
    ax.legend(handles=[Patch(color=FAMILY_COLOR[f], label=names.get(f, f)) for f in fams],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _stacked(plt, counts):
    """One horizontal-bar panel per scenario, each as tall as its number of bars."""
    heights = [max(1, n) * 0.3 + 0.9 for n in counts]
    fig, axes = plt.subplots(len(counts), 1, figsize=(10, sum(heights) + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    return fig, list(axes[:, 0])


def _wrap(text, width=90):
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


# ------------------------------------------------------------------ writing

def write_all(results, out_dir, plots=True):
    os.makedirs(out_dir, exist_ok=True)
    summarize(results)
    paths = []
    plot_list = []
    if plots:
        try:
            plot_list = plot_all(results, out_dir)
        except ImportError as exc:
            results["meta"]["plots_error"] = "matplotlib: %s" % exc
    path = os.path.join(out_dir, "latest.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")
    paths.append(path)
    path = os.path.join(out_dir, "latest.md")
    with open(path, "w") as f:
        f.write(markdown(results, plot_list))
    paths.append(path)
    path = os.path.join(out_dir, "README-snippet.md")
    with open(path, "w") as f:
        f.write(snippet(results, plot_list, out_dir))
    paths.append(path)
    paths += [p for _, p in plot_list]
    return paths


# ------------------------------------------------------------------ README

START_MARK = "<!-- bench:start"
END_MARK = "<!-- bench:end -->"


def splice_readme(readme_text, snippet_text):
    """Put ``snippet_text`` between the bench markers of ``readme_text``.

    Returns ``(new_text, True)``, or ``(readme_text, False)`` when the README
    has no ``<!-- bench:start ... -->`` / ``<!-- bench:end -->`` pair: the
    README decides where the figures go, this never adds the markers.
    """
    start = readme_text.find(START_MARK)
    end = readme_text.find(END_MARK, start + 1 if start >= 0 else 0)
    if start < 0 or end < 0:
        return readme_text, False
    snippet = snippet_text.strip("\n")
    return readme_text[:start] + snippet + readme_text[end + len(END_MARK):], True


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Rewrite the tables and plots from a results JSON, and/or put "
                    "README-snippet.md between the bench markers of a README.")
    ap.add_argument("--from", dest="src", default=None,
                    help="results JSON to render again (e.g. bench/results/latest.json)")
    ap.add_argument("--readme", default=None, help="README to update between its markers")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = os.path.join(here, "results")
    if args.src:
        with open(args.src) as f:
            results = json.load(f)
        out_dir = os.path.dirname(os.path.abspath(args.src))
        for path in write_all(results, out_dir, plots=not args.no_plots):
            print("wrote %s" % path)
    if args.readme:
        with open(os.path.join(out_dir, "README-snippet.md")) as f:
            snippet_text = f.read()
        with open(args.readme) as f:
            text = f.read()
        new, ok = splice_readme(text, snippet_text)
        if not ok:
            print("%s has no %s ... %s markers: left alone" % (args.readme, START_MARK, END_MARK))
            return 1
        if new != text:
            with open(args.readme, "w") as f:
                f.write(new)
            print("updated %s" % args.readme)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
