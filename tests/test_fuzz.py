"""A bounded run of the differential fuzzer (tests/fuzz_parser.py) inside ``make test``.

The fuzzer runs for FUZZ_TEST_SECONDS (60) in a subprocess, under atheris
when it is importable, else as its seeded random-mutation loop, starting from
fuzz/corpus/ (read only here: new entries go to a temporary directory, crash
inputs too). The test asserts that it exits cleanly and reports how many
inputs it ran. ``make fuzz`` is the long run.
"""
import os
import re
import subprocess
import sys

import pytest

from turboworkers import _ext

if _ext.MODE == "pure":
    pytest.skip("pure mode (TURBOWORKERS_NO_EXTENSIONS=1): the compiled parser the fuzzer "
                "compares with gunicorn's is not used", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = os.path.join(ROOT, "fuzz", "corpus")
FUZZ_TEST_SECONDS = 60


def _has_atheris():
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def test_fuzz_bounded_run(tmp_path, e2e_report):
    work = tmp_path / "corpus"
    work.mkdir()
    script = os.path.join(HERE, "fuzz_parser.py")
    if _has_atheris():
        cmd = [sys.executable, script, str(work), SEEDS,
               "-max_total_time=%d" % FUZZ_TEST_SECONDS, "-timeout=10", "-max_len=4100",
               "-artifact_prefix=%s/" % tmp_path, "-print_final_stats=1"]
        how = "atheris"
    else:
        cmd = [sys.executable, script, "--fallback", str(FUZZ_TEST_SECONDS), SEEDS]
        how = "fallback loop (atheris is not importable)"
    proc = subprocess.run(cmd, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=FUZZ_TEST_SECONDS + 180)
    out = proc.stdout.decode("utf-8", "replace")
    tail = "\n".join(line for line in out.splitlines()
                     if not line.startswith('"') and "# Uses:" not in line)[-6000:]
    assert proc.returncode == 0, "fuzzer exited with %d (%s):\n%s" % (proc.returncode, how, tail)
    runs = re.findall(r"Done (\d+) runs in (\d+) second", out)
    if runs:
        executions, seconds = int(runs[-1][0]), int(runs[-1][1])
    else:
        found = re.findall(r"fuzz_parser: (\d+) executions", out)
        assert found, "no execution count in the fuzzer's output:\n%s" % tail
        executions, seconds = int(found[-1]), FUZZ_TEST_SECONDS
    assert executions > 0
    notes = [line for line in out.splitlines() if line.startswith("fuzz_parser: note")]
    e2e_report("%s: %d executions in %d s, %d new corpus entries, %d kinds of refusal difference (not fatal)"
               % (how, executions, seconds, len(os.listdir(work)), len(notes)))
    print("fuzzer (%s): %d executions in %d s" % (how, executions, seconds))
