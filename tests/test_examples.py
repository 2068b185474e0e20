"""The seed design's example runs end to end and checks its own results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_openvdb_lora_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "openvdb_lora_example.py")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "additive check passed" in out.stdout
    assert "identical = True" in out.stdout
    assert "tile mode (8x64)" in out.stdout
