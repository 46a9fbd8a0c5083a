"""Benchmark-style bound (slow): the hostile pool scans with exit 0, every reason right, < 500 MB, < 60 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostile_scan.py"


@pytest.mark.slow
def test_hostile_scan_stays_within_memory_and_time_bounds():
    # the bounds are checked by the bench script (a subprocess measured with wait4), never by a unit test's clock
    proc = subprocess.run([sys.executable, str(BENCH), "--max-rss-mb", "500", "--max-seconds", "60"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "OK: every adapter catalogued" in proc.stdout
