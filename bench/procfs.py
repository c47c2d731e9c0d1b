"""What the harness reads from /proc: worker pids, context switches, RSS,
where each thread sleeps.

Every function takes ``root`` (default ``/proc``) so the tests can point it
at a fake tree.
"""
import os

PROC = "/proc"


def _read(path):
    try:
        with open(path, "r", encoding="ascii", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def ppid_of(pid, root=PROC):
    """Parent pid from /proc/PID/stat, or None if the process is gone."""
    stat = _read(os.path.join(root, str(pid), "stat"))
    if stat is None:
        return None
    # The command name sits in parentheses and may itself contain spaces or
    # parentheses: the fields after the last ")" are fixed.
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        return int(rest[1])
    except (IndexError, ValueError):
        return None


def children(pid, root=PROC):
    """Pids of the direct children of ``pid``, sorted.

    Reads /proc/PID/task/*/children (children of every thread) and falls back
    to scanning the ppid of every process when the kernel lacks that file.
    """
    found = set()
    task_dir = os.path.join(root, str(pid), "task")
    have_children_file = False
    try:
        tids = os.listdir(task_dir)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        tids = []
    for tid in tids:
        text = _read(os.path.join(task_dir, tid, "children"))
        if text is None:
            continue
        have_children_file = True
        found.update(int(p) for p in text.split())
    if not have_children_file:
        try:
            entries = os.listdir(root)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if entry.isdigit() and ppid_of(entry, root) == pid:
                found.add(int(entry))
    return sorted(found)


def descendants(pid, root=PROC):
    """All processes below ``pid`` (children, grandchildren, ...)."""
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop(), root):
            out.append(child)
            todo.append(child)
    return sorted(out)


def status_fields(pid, tid=None, root=PROC):
    """The ``Key: value`` lines of /proc/PID/status (or of one task) as a dict."""
    if tid is None:
        path = os.path.join(root, str(pid), "status")
    else:
        path = os.path.join(root, str(pid), "task", str(tid), "status")
    text = _read(path)
    if text is None:
        return None
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def context_switches(pid, root=PROC):
    """voluntary + nonvoluntary context switches summed over every thread of ``pid``.

    Threads that exited are not counted (their switches are folded into
    nothing the kernel shows per task), which is why the harness reads this
    before and after a run on long-lived workers. Returns 0 for a process
    that is gone.
    """
    task_dir = os.path.join(root, str(pid), "task")
    try:
        tids = os.listdir(task_dir)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    total = 0
    for tid in tids:
        fields = status_fields(pid, tid, root)
        if not fields:
            continue
        for key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            try:
                total += int(fields.get(key, "0").split()[0])
            except (ValueError, IndexError):
                pass
    return total


def total_context_switches(pids, root=PROC):
    return sum(context_switches(pid, root) for pid in pids)


def rss_kib(pid, root=PROC):
    """VmRSS of ``pid`` in KiB, or None if unknown (process gone, kernel thread)."""
    fields = status_fields(pid, root=root)
    if not fields or "VmRSS" not in fields:
        return None
    try:
        return int(fields["VmRSS"].split()[0])
    except (ValueError, IndexError):
        return None


def task_wchans(pid, root=PROC):
    """{tid: wchan} for every thread of ``pid``: the kernel function each one
    sleeps in ("0" or "" while it runs); {} for a process that is gone."""
    task_dir = os.path.join(root, str(pid), "task")
    try:
        tids = os.listdir(task_dir)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    out = {}
    for tid in tids:
        text = _read(os.path.join(task_dir, tid, "wchan"))
        if text is not None and tid.isdigit():
            out[int(tid)] = text.strip()
    return out


def is_zombie(pid, root=PROC):
    """True if ``pid`` has exited and waits to be reaped, or is gone."""
    stat = _read(os.path.join(root, str(pid), "stat"))
    if stat is None:
        return True
    rest = stat[stat.rfind(")") + 2:].split()
    return bool(rest) and rest[0] in ("Z", "X")
