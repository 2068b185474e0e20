"""The README's Python blocks run as printed: each ```python block is run in a fresh
interpreter (in a temporary folder), and where a ```text block follows it after the line
"prints", the output must be that text exactly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*\n\s*prints\s*\n\s*```text\n(.*?)```)?", re.S)


def blocks() -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def test_the_readme_has_a_quickstart():
    assert blocks(), "README.md has no ```python block"


@pytest.mark.parametrize("k", range(len(blocks())))
def test_readme_python_block_runs_as_printed(k, tmp_path):
    from conftest import needs_core
    code, expected = blocks()[k]
    if "SparseAdapter" in code or "AdapterSet" in code:
        needs_core()
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"README block {k} failed:\n{r.stderr[-3000:]}"
    if expected is not None:
        assert r.stdout == expected, f"README block {k} printed:\n{r.stdout}"
