"""The fuzz harness (tests/fuzz_harness.py) in a child process: a crash fails the test, not
the test run. CI runs 10^5 inputs; ``HYPRVDB_SOAK=1 pytest -m slow tests/test_fuzz.py`` runs
10^6 (the count in the README comes from that run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_harness.py")


def run(cases: int, seed: int, timeout: float) -> dict:
    p = subprocess.run([sys.executable, str(HARNESS), str(cases), str(seed)],
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode in (0, 1), (f"the fuzzed process died (exit {p.returncode}): a crash\n"
                                    f"{p.stderr[-3000:]}")
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["cases"] == cases
    assert report["failures"] == [], "\n".join(report["failures"])
    assert report["results"] > cases // 10 and report["refused"] > cases // 10, report
    return report


def test_fuzz_bounded():
    run(100_000, seed=20261204, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HYPRVDB_SOAK"),
                    reason="the 10^6-input soak runs with HYPRVDB_SOAK=1 (CI runs 10^5 above)")
def test_fuzz_soak():
    report = run(1_000_000, seed=1, timeout=3600)
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}))
